//! One connection to Postgres, and the database created through the maintenance database when
//! it does not exist yet.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

pub(super) async fn connect(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates the configured database through the `postgres` maintenance database. Several
/// processes may race to create it; losing that race is success.
pub(super) async fn create_database(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<(), tokio_postgres::Error> {
    let name = config.get_dbname().unwrap_or("pokeq").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance, tls).await?;
    let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}
