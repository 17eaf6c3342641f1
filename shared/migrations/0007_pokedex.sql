-- The whole Pokédex (issue #14): species, evolution chains, types, abilities and moves beside
-- pokemon, each resource's document as the API sent it, and the views that join them.

-- Every stored resource's document, one table for all of them rather than a column per table:
-- it is keyed like ingest_items, (resource, id), where the HTTP validators already are (0004),
-- so a seventh resource needs a table for its rows and nothing here; the typed tables stay the
-- narrow rows a Pokédex reads; and pokemon, whose table predates this one and whose documents
-- are mostly `moves` (about 100 KB each), can keep them here or not without a schema change.
-- etag and last_modified are the validators the document came with (ingest_items keeps the
-- ones the next conditional request sends; the same write sets both); fetched_at is when it
-- was stored after its fetch.
create table resource_documents (
    resource      text        not null,
    id            integer     not null,
    document      jsonb       not null,
    etag          text        null,
    last_modified text        null,
    fetched_at    timestamptz not null default now(),
    primary key (resource, id)
);

-- pokemon-species. Texts are the English ones; flavor_text is the latest game's, on one line.
create table species (
    id                      integer     primary key,
    name                    text        not null,
    display_name            text        null,
    genus                   text        null,
    flavor_text             text        null,
    flavor_text_version     text        null,
    capture_rate            integer     not null,
    base_happiness          integer     null,
    is_baby                 boolean     not null,
    is_legendary            boolean     not null,
    is_mythical             boolean     not null,
    evolution_chain_id      integer     null,
    evolves_from_species_id integer     null,
    generation              integer     null,
    sort_order              integer     null,
    ingested_at             timestamptz not null default now()
);
-- pokemon name their species by name (pokemon.species): the pokedex view joins on it.
create index species_name on species (name);

-- evolution-chain, flattened: one row per species of a chain, the root's evolves_from null. The
-- columns after depth describe one way of evolving, PokeAPI's default one (see
-- shared/src/resources/evolution_chain.rs); detail_count says how many the document lists.
create table evolutions (
    chain_id                integer     not null,
    species_id              integer     not null,
    species_name            text        not null,
    evolves_from_species_id integer     null,
    depth                   integer     not null,
    is_baby                 boolean     not null,
    trigger                 text        null,
    min_level               integer     null,
    item                    text        null,
    held_item               text        null,
    min_happiness           integer     null,
    time_of_day             text        null,
    known_move_type         text        null,
    location                text        null,
    detail_count            integer     not null,
    ingested_at             timestamptz not null default now(),
    primary key (chain_id, species_id)
);
create index evolutions_species on evolutions (species_id);

-- type. Damage relations hold type names, as pokemon.types does.
create table types (
    id                 integer     primary key,
    name               text        not null,
    display_name       text        null,
    generation         integer     null,
    damage_class       text        null,
    double_damage_to   text[]      not null default '{}',
    half_damage_to     text[]      not null default '{}',
    no_damage_to       text[]      not null default '{}',
    double_damage_from text[]      not null default '{}',
    half_damage_from   text[]      not null default '{}',
    no_damage_from     text[]      not null default '{}',
    ingested_at        timestamptz not null default now()
);

-- ability, with its English effect texts.
create table abilities (
    id             integer     primary key,
    name           text        not null,
    display_name   text        null,
    generation     integer     null,
    is_main_series boolean     null,
    effect         text        null,
    short_effect   text        null,
    flavor_text    text        null,
    ingested_at    timestamptz not null default now()
);

-- move, with its English effect texts ($effect_chance replaced by the chance).
create table moves (
    id            integer     primary key,
    name          text        not null,
    display_name  text        null,
    generation    integer     null,
    type_id       integer     null,
    type_name     text        null,
    damage_class  text        null,
    power         integer     null,
    accuracy      integer     null,
    pp            integer     null,
    priority      integer     null,
    effect_chance integer     null,
    effect        text        null,
    short_effect  text        null,
    flavor_text   text        null,
    ingested_at   timestamptz not null default now()
);

-- pokemon → types as links. pokemon.types already holds the names in slot order, so this is a
-- view over it rather than a second copy to keep in step: slot is the position in that order
-- (PokeAPI's slots are 1 and 2), type_id is null until the type itself is stored.
create view pokemon_types as
select p.id as pokemon_id, t.slot::integer as slot, t.name as type_name, ty.id as type_id
from pokemon p
cross join lateral unnest(p.types) with ordinality as t(name, slot)
left join types ty on ty.name = t.name;

-- One row per pokemon with what a Pokédex page shows: its species' genus, flavour text and
-- capture figures, its types, and its place in its evolution chain (`evolves_to`: what its
-- species evolves into; `evolution_chain`: the chain's species, root first). Species columns
-- are null until the species is stored.
create view pokedex as
select p.id, p.name, s.display_name, p.species, s.id as species_id, s.genus, s.flavor_text,
       s.flavor_text_version, s.generation, s.capture_rate, s.base_happiness, s.is_baby,
       s.is_legendary, s.is_mythical, p.types,
       array(select pt.type_id from pokemon_types pt where pt.pokemon_id = p.id
             order by pt.slot) as type_ids,
       p.abilities, p.height_m, p.weight_kg, p.base_experience, p.sprite_url, p.is_default,
       s.evolution_chain_id,
       (select f.species_name from evolutions f
        where f.chain_id = s.evolution_chain_id
          and f.species_id = s.evolves_from_species_id) as evolves_from,
       array(select e.species_name from evolutions e
             where e.chain_id = s.evolution_chain_id and e.evolves_from_species_id = s.id
             order by e.species_id) as evolves_to,
       array(select e.species_name from evolutions e
             where e.chain_id = s.evolution_chain_id
             order by e.depth, e.species_id) as evolution_chain
from pokemon p
left join species s on s.name = p.species;

-- Every evolution as one row, from a species to what it evolves into, and how.
create view pokedex_evolutions as
select e.chain_id, f.species_id as from_species_id, f.species_name as from_species,
       e.species_id as to_species_id, e.species_name as to_species, e.depth, e.trigger,
       e.min_level, e.item, e.held_item, e.min_happiness, e.time_of_day, e.known_move_type,
       e.location
from evolutions e
join evolutions f on f.chain_id = e.chain_id and f.species_id = e.evolves_from_species_id;
