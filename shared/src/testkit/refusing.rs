//! Services that refuse rather than fail, for the tests of configuration errors: a Postgres role
//! on the machine's server that may log in but not create anything, and a private Postgres
//! cluster that asks for a password (the machine's own server trusts every local connection, so
//! a wrong password cannot be refused there).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::Rng;

use super::guard::on_own_runtime;
use super::pg_server_url;
use crate::store;

/// Runs statements in `database` as the superuser of the machine's server, on a thread and
/// runtime of their own so that it also works from `Drop` (and so during a panic).
fn superuser(database: &str, sql: String) -> Result<(), String> {
    let url = format!("{}/{database}", pg_server_url());
    on_own_runtime(async move {
        let config = store::parse_url(&url).map_err(|e| e.to_string())?;
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        client.batch_execute(&sql).await.map_err(|e| e.to_string())
    })
}

/// A login role without CREATEDB on the machine's server, and an empty database it may connect
/// to but not create tables in. Both are dropped on drop.
pub struct LimitedRole {
    pub name: String,
    pub password: String,
    /// A database owned by the superuser, with nothing in it.
    pub empty_database: String,
}

impl LimitedRole {
    /// The role logs in with `password` where the server asks for one.
    pub fn create(password: &str) -> Self {
        let tag: u64 = rand::rng().random();
        let role = Self {
            name: format!("pokeq_limited_{tag:016x}"),
            password: password.to_owned(),
            empty_database: format!("pokeq_limited_{tag:016x}"),
        };
        // One statement each: CREATE and DROP DATABASE refuse to share a query string.
        superuser(
            "postgres",
            format!(
                "create role \"{}\" login nocreatedb nocreaterole password '{}'",
                role.name,
                password.replace('\'', "''")
            ),
        )
        .expect("Postgres superuser creates a role");
        superuser(
            "postgres",
            format!("create database \"{}\"", role.empty_database),
        )
        .expect("Postgres superuser creates a database");
        // Postgres 15 does this by default; older servers let PUBLIC create tables there.
        superuser(
            &role.empty_database,
            "revoke create on schema public from public".to_owned(),
        )
        .expect("revoke create on schema public");
        role
    }

    /// A URL as this role for `database`.
    pub fn url(&self, database: &str) -> String {
        let mut url = url::Url::parse(&pg_server_url()).expect("TEST_PG_URL parses");
        let _ = url.set_username(&self.name);
        let _ = url.set_password(Some(&self.password));
        url.set_path(database);
        url.to_string()
    }
}

impl Drop for LimitedRole {
    fn drop(&mut self) {
        let _ = superuser(
            "postgres",
            format!(
                "drop database if exists \"{}\" with (force)",
                self.empty_database
            ),
        );
        let _ = superuser("postgres", format!("drop role if exists \"{}\"", self.name));
    }
}

/// A throwaway Postgres cluster with password (SCRAM) authentication for every connection, on a
/// free port of 127.0.0.1, its socket and data in a temporary directory. `initdb` and `pg_ctl`
/// come from `PATH` or `/usr/lib/postgresql/<version>/bin`, and run as the `postgres` OS user
/// when the tests run as root (both refuse root). Stopped and removed on drop.
pub struct PasswordPostgres {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl PasswordPostgres {
    /// Creates and starts the cluster; superuser `postgres` with `password`. Takes a few seconds
    /// and blocks: call it through `spawn_blocking` from async code.
    pub fn start(password: &str) -> Self {
        let bin = postgres_bin().expect(
            "Postgres server programs (initdb, pg_ctl) in PATH or /usr/lib/postgresql/*/bin",
        );
        let tag: u64 = rand::rng().random();
        let dir = std::env::temp_dir().join(format!("pokeq-pwpg-{tag:016x}"));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let cluster = Self {
            dir,
            bin,
            as_postgres,
            // The cluster's postmaster binds the port itself.
            port: super::free_port(),
        };
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(&cluster.dir)
                .status();
            assert!(
                chown.is_ok_and(|s| s.success()),
                "chown postgres: {}",
                cluster.dir.display()
            );
        }
        let pwfile = cluster.dir.join("password");
        std::fs::write(&pwfile, password).expect("password file");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data().as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            cluster.port,
            cluster.dir.display()
        );
        let conf = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("postgresql.conf written");
        let log = cluster.dir.join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                cluster.data().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "start".as_ref(),
            ],
        );
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A URL of this cluster as `user` with `password`, for `database`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PasswordPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb` and `pg_ctl`: on `PATH`, else Debian's newest versioned one.
fn postgres_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()));
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(Path::new("/usr/lib/postgresql"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop()
}
