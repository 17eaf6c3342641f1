//! The consumer's group commit against a real Postgres: a batch of rows is one transaction, and
//! still writes each item once, whatever the batch holds.

use pokeq_shared::commit::{self, Committed, Document, Finished};
use pokeq_shared::store::SaveRow;
use pokeq_shared::testkit::{self, Fresh};
use pokeq_shared::transform::{Pokemon, Stat};
use pokeq_shared::validators::Validators;

fn row(id: i32, name: &str) -> SaveRow {
    SaveRow {
        pokemon: Pokemon {
            id,
            name: name.to_owned(),
            height: 7,
            weight: 69,
            base_experience: Some(64),
            types: vec!["grass".into(), "poison \"quoted\", with a comma".into()],
            abilities: vec![],
            stats: vec![Stat {
                name: "hp".into(),
                base_stat: 45,
                effort: 0,
            }],
            sprite: None,
            species: Some(name.to_owned()),
            is_default: Some(true),
            order: Some(id),
        },
        validators: Validators {
            etag: Some(format!("\"v{id}\"")),
            last_modified: None,
        },
        attempts: 1,
    }
}

#[tokio::test]
async fn a_batch_writes_each_item_once_and_skips_items_already_done() {
    let env = Fresh::start("groupcommit").await;
    let first = testkit::save(
        &env.store,
        [row(3, "third"), row(1, "first"), row(3, "third again")],
    )
    .await
    .expect("batch saved");
    assert_eq!(
        first,
        [true, true, false],
        "the second row of item 3 is a duplicate"
    );
    let second = testkit::save(&env.store, [row(1, "first again"), row(2, "second")])
        .await
        .expect("batch saved");
    assert_eq!(second, [false, true], "item 1 was done already");

    let client = env.client().await;
    let rows = client
        .query(
            "select p.id, p.name, p.height_m::text, p.weight_kg::text, p.types, p.stats::text,
                    i.status, i.etag
             from pokemon p join ingest_items i using (id) order by p.id",
            &[],
        )
        .await
        .expect("rows");
    let names: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        names,
        [
            (1, "first".into()),
            (2, "second".into()),
            (3, "third".into())
        ]
    );
    let one = &rows[0];
    assert_eq!((one.get(2), one.get(3)), ("0.7", "6.9"));
    assert_eq!(
        one.get::<_, Vec<String>>(4),
        ["grass", "poison \"quoted\", with a comma"]
    );
    assert_eq!(
        one.get::<_, &str>(5),
        r#"[{"name": "hp", "effort": 0, "base_stat": 45}]"#
    );
    assert_eq!(one.get::<_, &str>(6), "done");
    assert_eq!(one.get::<_, Option<&str>>(7), Some("\"v1\""));
    drop(client);
}

/// A followed document's links are enqueued in the commit that marks it done: each link no item
/// stands for once (for the first job naming it), none that is a document of the same commit or
/// an item already, whatever its state, and none when the commit fails.
#[tokio::test]
async fn links_are_enqueued_in_their_documents_commit_once() {
    let env = Fresh::start("groupcommitlinks").await;
    let client = env.client().await;
    client
        .execute(
            "insert into ingest_items (resource, id, status) values ('move', 1, 'failed')",
            &[],
        )
        .await
        .expect("a failed move");
    let follow = |id: i32, links: &[(&'static str, i32)]| Finished {
        document: Document::Pokemon(row(id, "linking")),
        links: links.to_vec(),
    };
    let committed = commit::commit(
        &env.store,
        &[
            follow(1, &[("move", 1), ("move", 2), ("type", 3), ("pokemon", 2)]),
            follow(2, &[("move", 2), ("ability", 4)]),
        ],
    )
    .await
    .expect("committed");
    assert_eq!(
        committed,
        [
            Committed {
                written: true,
                enqueued: vec![("move", 2), ("type", 3)],
            },
            Committed {
                written: true,
                enqueued: vec![("ability", 4)],
            },
        ],
        "move 1 is known, pokemon 2 is a document of the commit, move 2 goes to the first job"
    );
    // Pokemon 1 again (done already): its links are known, and nothing is enqueued twice.
    let again = commit::commit(&env.store, &[follow(1, &[("move", 2), ("move", 5)])])
        .await
        .expect("committed");
    assert_eq!(
        again,
        [Committed {
            written: false,
            enqueued: vec![("move", 5)],
        }]
    );
    // A commit the database refuses stores neither the document nor its links.
    let mut refused = follow(7, &[("move", 6)]);
    if let Document::Pokemon(row) = &mut refused.document {
        row.pokemon.species = Some("nul\0".into());
    }
    commit::commit(&env.store, &[refused])
        .await
        .expect_err("refused");

    let items: Vec<(String, i32, String)> = client
        .query(
            "select resource, id, status from ingest_items order by resource, id",
            &[],
        )
        .await
        .expect("items")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let item = |resource: &str, id: i32, status: &str| (resource.to_owned(), id, status.to_owned());
    assert_eq!(
        items,
        [
            item("ability", 4, "queued"),
            item("move", 1, "failed"),
            item("move", 2, "queued"),
            item("move", 5, "queued"),
            item("pokemon", 1, "done"),
            item("pokemon", 2, "done"),
            item("type", 3, "queued"),
        ]
    );
    let queued_at_set: i64 = client
        .query_one(
            "select count(*) from ingest_items where status = 'queued' and queued_at is not null",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(queued_at_set, 4, "a link's queued_at is its enqueueing");
    drop(client);
}
