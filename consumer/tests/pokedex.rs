//! The Pokédex tables against a real Postgres: documents go through their resource's transform
//! into their tables (no broker, no consumer), and the `pokedex` views answer from them.

use pokeq_shared::resource_rows::{self, SaveRecord};
use pokeq_shared::resources;
use pokeq_shared::store::SaveRow;
use pokeq_shared::testkit::{self, Fresh, samples_dir};
use pokeq_shared::validators::Validators;

/// Eevee's pokemon document, cut to what the pokemon transform reads: the samples have eevee's
/// species and chain but not its pokemon (pokemon/133), so the test writes that part itself.
const EEVEE: &str = r#"{"id":133,"name":"eevee","height":3,"weight":65,"base_experience":65,
    "types":[{"slot":1,"type":{"name":"normal","url":"/api/v2/type/1/"}}],
    "abilities":[{"ability":{"name":"run-away","url":"/api/v2/ability/50/"},"is_hidden":false,"slot":1},
                 {"ability":{"name":"adaptability","url":"/api/v2/ability/91/"},"is_hidden":false,"slot":2},
                 {"ability":{"name":"anticipation","url":"/api/v2/ability/107/"},"is_hidden":true,"slot":3}],
    "stats":[{"base_stat":55,"effort":0,"stat":{"name":"hp","url":"/api/v2/stat/1/"}}],
    "sprites":{"front_default":null},"moves":[],
    "species":{"name":"eevee","url":"/api/v2/pokemon-species/133/"},
    "is_default":true,"order":220}"#;

const EEVEELUTIONS: [&str; 8] = [
    "vaporeon", "jolteon", "flareon", "espeon", "umbreon", "leafeon", "glaceon", "sylveon",
];

/// `(resource, id, status, name, etag)` of an `ingest_items` row.
type Item = (String, i32, String, Option<String>, Option<String>);

fn validators(tag: &str) -> Validators {
    Validators {
        etag: Some(format!("\"{tag}\"")),
        last_modified: Some("Sat, 08 Aug 2026 00:00:00 GMT".into()),
    }
}

fn record(resource: &str, id: i32, body: &[u8]) -> SaveRecord {
    let resource = resources::by_name(resource).expect("a known resource");
    SaveRecord {
        record: resource
            .transform(id, body)
            .unwrap_or_else(|e| panic!("{} {id}: {e}", resource.name())),
        validators: validators(&format!("{}-{id}", resource.name())),
        attempts: 1,
    }
}

#[tokio::test]
async fn the_pokedex_view_answers_eevee_with_its_species_and_eight_evolutions() {
    let Some(samples) = samples_dir("the pokedex view over eevee's real species and chain") else {
        return;
    };
    let env = Fresh::start("pokedex").await;
    let read = |path: &str| std::fs::read(samples.join(path)).expect("sample file");
    let pokemon = pokeq_shared::transform::transform(133, EEVEE.as_bytes()).expect("eevee");
    testkit::save(
        &env.store,
        [SaveRow {
            pokemon,
            validators: validators("pokemon-133"),
            attempts: 1,
        }],
    )
    .await
    .expect("pokemon stored");
    let written = testkit::save(
        &env.store,
        [
            record("evolution-chain", 67, &read("evolution-chain/67.json")),
            record("pokemon-species", 133, &read("pokemon-species/133.json")),
            record("type", 1, &read("type/1.json")),
        ],
    )
    .await
    .expect("resources stored");
    assert_eq!(written, [true, true, true]);

    let client = env.client().await;
    let row = client
        .query_one(
            "select species_id, display_name, genus, flavor_text, flavor_text_version,
                    capture_rate, is_legendary, generation, types, type_ids,
                    evolution_chain_id, evolves_from, evolves_to, evolution_chain
             from pokedex where name = 'eevee'",
            &[],
        )
        .await
        .expect("eevee in the pokedex");
    assert_eq!(row.get::<_, Option<i32>>("species_id"), Some(133));
    assert_eq!(row.get::<_, Option<&str>>("display_name"), Some("Eevee"));
    assert_eq!(
        row.get::<_, Option<&str>>("genus"),
        Some("Evolution Pokémon")
    );
    let flavor: &str = row.get("flavor_text");
    assert!(
        flavor.starts_with("Harbors the potential to evolve into manifold forms.")
            && !flavor.contains('\n'),
        "{flavor}"
    );
    assert_eq!(
        row.get::<_, Option<&str>>("flavor_text_version"),
        Some("legends-arceus")
    );
    assert_eq!(row.get::<_, Option<i32>>("capture_rate"), Some(45));
    assert_eq!(row.get::<_, Option<bool>>("is_legendary"), Some(false));
    assert_eq!(row.get::<_, Option<i32>>("generation"), Some(1));
    assert_eq!(row.get::<_, Vec<String>>("types"), ["normal"]);
    assert_eq!(row.get::<_, Vec<Option<i32>>>("type_ids"), [Some(1)]);
    assert_eq!(row.get::<_, Option<i32>>("evolution_chain_id"), Some(67));
    assert_eq!(row.get::<_, Option<&str>>("evolves_from"), None);
    assert_eq!(row.get::<_, Vec<String>>("evolves_to"), EEVEELUTIONS);
    let chain: Vec<String> = row.get("evolution_chain");
    assert_eq!(chain[0], "eevee");
    assert_eq!(chain[1..], EEVEELUTIONS);

    let evolutions: Vec<(String, Option<String>, Option<String>)> = client
        .query(
            "select to_species, trigger, item from pokedex_evolutions
             where from_species = 'eevee' order by to_species_id",
            &[],
        )
        .await
        .expect("eevee's evolutions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let names: Vec<&str> = evolutions
        .iter()
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert_eq!(names, EEVEELUTIONS);
    assert_eq!(
        evolutions[0],
        (
            "vaporeon".to_owned(),
            Some("use-item".to_owned()),
            Some("water-stone".to_owned())
        )
    );

    let items: Vec<Item> = client
        .query(
            "select resource, id, status, name, etag from ingest_items order by resource, id",
            &[],
        )
        .await
        .expect("items")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let done = |resource: &str, id, name: Option<&str>| {
        (
            resource.to_owned(),
            id,
            "done".to_owned(),
            name.map(str::to_owned),
            Some(format!("\"{resource}-{id}\"")),
        )
    };
    assert_eq!(
        items,
        [
            done("evolution-chain", 67, None),
            done("pokemon", 133, Some("eevee")),
            done("pokemon-species", 133, Some("eevee")),
            done("type", 1, Some("normal")),
        ]
    );
    let documents: Vec<(String, i32, Option<String>, Option<String>)> = client
        .query(
            "select resource, id, document->>'name', etag from resource_documents
             order by resource, id",
            &[],
        )
        .await
        .expect("documents")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        documents,
        [
            (
                "evolution-chain".into(),
                67,
                None,
                Some("\"evolution-chain-67\"".into())
            ),
            (
                "pokemon-species".into(),
                133,
                Some("eevee".into()),
                Some("\"pokemon-species-133\"".into())
            ),
            (
                "type".into(),
                1,
                Some("normal".into()),
                Some("\"type-1\"".into())
            ),
        ]
    );
    drop(client);
}

/// A pokemon whose species is not stored yet is in the pokedex all the same, with its own
/// columns and nulls for the species'.
#[tokio::test]
async fn a_pokemon_without_its_species_is_listed_with_nulls() {
    let env = Fresh::start("pokedexnull").await;
    let pokemon = pokeq_shared::transform::transform(133, EEVEE.as_bytes()).expect("eevee");
    testkit::save(
        &env.store,
        [SaveRow {
            pokemon,
            validators: Validators::default(),
            attempts: 1,
        }],
    )
    .await
    .expect("pokemon stored");
    let client = env.client().await;
    let row = client
        .query_one(
            "select name, types, type_ids, species_id, genus, evolves_to from pokedex",
            &[],
        )
        .await
        .expect("one row");
    assert_eq!(row.get::<_, &str>("name"), "eevee");
    assert_eq!(row.get::<_, Vec<String>>("types"), ["normal"]);
    assert_eq!(row.get::<_, Vec<Option<i32>>>("type_ids"), [None]);
    assert_eq!(row.get::<_, Option<i32>>("species_id"), None);
    assert_eq!(row.get::<_, Option<&str>>("genus"), None);
    assert!(row.get::<_, Vec<String>>("evolves_to").is_empty());
    drop(client);
}

/// Chain 10 (pichu, pikachu, raichu), cut down to what the transform reads.
fn pichu_chain(with_raichu: bool) -> String {
    let raichu = r#"{"species":{"name":"raichu","url":"/api/v2/pokemon-species/26/"},
        "evolution_details":[{"item":{"name":"thunder-stone"},"trigger":{"name":"use-item"}}],
        "evolves_to":[]}"#;
    format!(
        r#"{{"id":10,"chain":{{"species":{{"name":"pichu","url":"/api/v2/pokemon-species/172/"}},
        "is_baby":true,"evolves_to":[{{"species":{{"name":"pikachu","url":"/api/v2/pokemon-species/25/"}},
        "evolution_details":[{{"min_happiness":220,"trigger":{{"name":"level-up"}}}}],
        "evolves_to":[{}]}}]}}}}"#,
        if with_raichu { raichu } else { "" }
    )
}

#[tokio::test]
async fn records_are_written_once_per_item_and_a_changed_chain_loses_its_old_species() {
    let env = Fresh::start("pokedexsave").await;
    let chain = pichu_chain(true);
    let ability = |name: &str| {
        format!(
            r#"{{"id":9,"name":"{name}","is_main_series":true,"effect_entries":[
            {{"effect":"E","short_effect":"S","language":{{"name":"en"}}}}]}}"#
        )
    };
    let first = testkit::save(
        &env.store,
        [
            record("ability", 9, ability("static").as_bytes()),
            record("evolution-chain", 10, chain.as_bytes()),
            record("ability", 9, ability("static-again").as_bytes()),
        ],
    )
    .await
    .expect("saved");
    assert_eq!(first, [true, true, false], "the second record of ability 9");
    let again = testkit::save(
        &env.store,
        [record("ability", 9, ability("static-later").as_bytes())],
    )
    .await
    .expect("saved");
    assert_eq!(again, [false], "ability 9 is done");

    let client = env.client().await;
    let name: String = client
        .query_one("select name from abilities where id = 9", &[])
        .await
        .expect("ability row")
        .get(0);
    assert_eq!(name, "static");
    let species = |client: deadpool_postgres::Object| async move {
        client
            .query(
                "select species_name from evolutions where chain_id = 10
                 order by depth, species_id",
                &[],
            )
            .await
            .expect("chain rows")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(species(client).await, ["pichu", "pikachu", "raichu"]);

    // A refresh writes whatever the item's state: the chain's new version has no raichu.
    resource_rows::upsert(
        &env.store,
        &[
            record("evolution-chain", 10, pichu_chain(false).as_bytes()),
            record("ability", 9, ability("static-refreshed").as_bytes()),
        ],
    )
    .await
    .expect("upserted");
    assert_eq!(species(env.client().await).await, ["pichu", "pikachu"]);
    let client = env.client().await;
    let (name, document): (String, String) = client
        .query_one(
            "select a.name, d.document->>'name' from abilities a
             join resource_documents d on d.resource = 'ability' and d.id = a.id",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("ability and its document");
    assert_eq!(
        (name.as_str(), document.as_str()),
        ("static-refreshed", "static-refreshed")
    );
    drop(client);
}

/// Everything the stub serves for 200 pokemon, stored through the transforms: every link the
/// documents carry finds its row, and the views join them all.
#[tokio::test]
async fn every_stub_document_is_stored_and_the_views_join_them() {
    use pokeapi_stub::{Dataset, Resource as Stub};
    let env = Fresh::start("pokedexstub").await;
    let dataset = Dataset::synthetic(200, 3);
    let pokemon: Vec<SaveRow> = dataset
        .ids()
        .iter()
        .map(|&id| SaveRow {
            pokemon: pokeq_shared::transform::transform(id, &dataset.payload(id).expect("payload"))
                .expect("pokemon transforms"),
            validators: Validators::default(),
            attempts: 1,
        })
        .collect();
    testkit::save(&env.store, pokemon)
        .await
        .expect("pokemon stored");
    let mut records = Vec::new();
    for resource in &Stub::ALL[1..] {
        for &id in dataset.resource_ids(*resource) {
            let body = dataset.document(*resource, id).expect("document");
            records.push(record(resource.name(), id, &body));
        }
    }
    let written = testkit::save(&env.store, records.clone())
        .await
        .expect("resources stored");
    assert!(written.iter().all(|w| *w));

    let client = env.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    for (resource, table) in [
        (Stub::PokemonSpecies, "select count(*) from species"),
        (Stub::Type, "select count(*) from types"),
        (Stub::Ability, "select count(*) from abilities"),
        (Stub::Move, "select count(*) from moves"),
        (
            Stub::EvolutionChain,
            "select count(distinct chain_id) from evolutions",
        ),
    ] {
        assert_eq!(
            count(table).await,
            dataset.resource_ids(resource).len() as i64,
            "{resource}"
        );
    }
    assert_eq!(count("select count(*) from species").await, 200);
    assert_eq!(count("select count(*) from pokedex").await, 200);
    assert_eq!(
        count("select count(*) from pokedex where species_id is null or genus is null").await,
        0,
        "every pokemon's species is stored"
    );
    assert_eq!(
        count(
            "select count(*) from species s where not exists (
                select from evolutions e where e.chain_id = s.evolution_chain_id
                    and e.species_id = s.id
                    and e.evolves_from_species_id is not distinct from s.evolves_from_species_id)"
        )
        .await,
        0,
        "every species is in its chain, under its parent"
    );
    assert_eq!(
        count("select count(*) from pokemon_types where type_id is null").await,
        0,
        "every pokemon's type is stored"
    );
    assert_eq!(
        count("select count(*) from moves m where not exists (select from types t where t.id = m.type_id and t.name = m.type_name)").await,
        0,
        "every move's type is stored"
    );
    assert!(count("select count(*) from pokedex_evolutions").await > 50);
    assert_eq!(
        count("select count(*) from resource_documents").await,
        records.len() as i64
    );
    drop(client);
}
