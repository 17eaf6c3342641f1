//! A local stand-in for PokeAPI's `/api/v2/pokemon` endpoints and the resources they link
//! (`pokemon-species`, `evolution-chain`, `type`, `ability`, `move`), used by tests, benchmarks
//! and the offline demo. Point a client at [`StubHandle::base_url`] (or the binary's
//! `http://<addr>/api/v2`) exactly as at `https://pokeapi.co/api/v2`.
//!
//! Module map:
//! - [`config`]: [`StubConfig`], what to serve and how to misbehave.
//! - [`dataset`]: [`Dataset`], the ids, names, payload bodies and [`PokemonRecord`]s to check
//!   consumers against; `synth` (per-id specs and a shared pre-rendered move pool), `render`
//!   (hand-written JSON text), `sprites` (the nested sprite URLs) and `samples` (real payload
//!   files) feed it. `world` lays out the linked resources (ids, names, evolution chains) and
//!   `documents` renders theirs. `listing` renders list pages, `counters` does request
//!   accounting.
//! - [`resource`]: [`Resource`], the six resources by PokeAPI's names.
//! - [`faults`]: [`FaultKind`] / [`FaultRule`], per-id (of any resource) and rate-based fault
//!   injection;
//!   [`ListFault`] for an id's list entry.
//! - [`server`]: axum routes, [`spawn`] / [`run`] and the [`StubHandle`] with request counters.
//! - [`parse`]: value parsers for the binary's flags (durations, rates, fault specs).
//!
//! Serving is cheap by design: a payload is a small per-request head and tail plus a zero-copy
//! slice of one shared buffer of move entries, so thousands of ~100 KB payloads per second cost
//! little CPU and memory stays bounded for any `count`.

pub mod config;
pub mod dataset;
pub mod faults;
pub mod parse;
pub mod resource;
pub mod server;

mod counters;
mod documents;
mod listing;
mod render;
mod rng;
mod samples;
mod sprites;
mod synth;
mod vocab;
mod world;

pub use config::StubConfig;
pub use dataset::{Dataset, FIRST_FORM_ID, Payload, PokemonRecord, id_layout};
pub use faults::{FaultKind, FaultRule, ListFault};
pub use resource::Resource;
pub use server::{StubHandle, run, spawn};
