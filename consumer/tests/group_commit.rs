//! The consumer's group commit against a real Postgres: a batch of rows is one statement, and
//! still writes each item once, whatever the batch holds.

use pokeq_shared::store::SaveRow;
use pokeq_shared::testkit::Fresh;
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
    let first = env
        .store
        .save_many(&[row(3, "third"), row(1, "first"), row(3, "third again")])
        .await
        .expect("batch saved");
    assert_eq!(
        first,
        [true, true, false],
        "the second row of item 3 is a duplicate"
    );
    let second = env
        .store
        .save_many(&[row(1, "first again"), row(2, "second")])
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
