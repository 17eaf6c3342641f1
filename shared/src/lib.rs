//! pokeq's shared library: everything the producer, the consumer and the operator CLI need.
//!
//! Data flows one way, and the modules follow it:
//! - [`config`] parses and validates the settings every binary shares, masking secrets;
//!   [`secret`] holds URLs with passwords so that only their masked form is ever shown.
//! - [`pokeapi`] is the HTTP client for the list and detail endpoints, with timeouts, a body cap
//!   and a classification of failures into transient and permanent; [`rate`] paces it (shared
//!   rate, adaptive concurrency, `Retry-After`) and [`circuit`] holds it through API outages.
//!   [`validators`] are a document's `ETag` and `Last-Modified`, which the client sends back
//!   and the store keeps per item.
//! - [`job`] is the message a producer publishes and a consumer decodes, and its AMQP headers.
//! - [`topology`] names and declares the exchanges and queues, identically in every binary.
//! - [`broker`] connects to RabbitMQ and publishes with confirms; [`worker`] is what a
//!   consumer tells the broker about itself, for the CLI to read back.
//! - [`transform`] turns a PokeAPI detail document into the row pokeq stores.
//! - [`resources`] are the other resources of the Pokédex (species, evolution chains, types,
//!   abilities, moves): one module each, with its row, its transform and its upsert.
//! - [`store`] is Postgres: migrations, item state and the upsert of transformed rows;
//!   [`resource_rows`] stores the [`resources`]' rows and documents; [`commit`] is a
//!   consumer's group commit of finished jobs of any resource, with the links they name;
//!   [`links`] finds those links; [`pgerror`] tells an outage from data the database refuses.
//! - [`retry`] holds every retry policy (backoff and bound) and the reasons for each.
//! - [`telemetry`] sets up tracing; [`shutdown`] turns signals into a cancellation token;
//!   [`exit`] maps a binary's outcome to the contract's exit codes.

pub mod broker;
pub mod circuit;
pub mod commit;
pub mod config;
pub mod exit;
pub mod job;
pub mod links;
pub mod metrics;
pub mod pgerror;
pub mod pokeapi;
pub mod rate;
pub mod resource_rows;
pub mod resources;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod topology;
pub mod transform;
pub mod validators;
pub mod worker;
