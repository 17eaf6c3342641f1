//! The suite's own services: a temporary directory, a private RabbitMQ node and a private
//! Postgres cluster on spare ports, which the scenarios stop and restart at will. The machine's
//! shared RabbitMQ (5672/15672/25672) and Postgres (5432) are never touched.
//!
//! Every guard cleans up on drop (so on success, on error, on panic and on Ctrl-C alike): the
//! node's process group is killed, the cluster is stopped with `pg_ctl stop -m immediate`, and
//! the directory is removed (unless `--keep`).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A port nobody listens on right now, never the same one twice in this process.
pub fn spare_port() -> Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a spare port")?;
        let port = listener.local_addr()?.port();
        // The shared services' ports, and the range `rabbitmqctl` itself listens on.
        if [5672, 15672, 25672, 5432].contains(&port) || (35672..=35682).contains(&port) {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no spare port found")
}

/// The suite's temporary directory: logs and data of everything it starts.
pub struct Workdir {
    pub path: PathBuf,
    pub keep: bool,
}

impl Workdir {
    pub fn create(keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("pokeq-chaos-{:08x}", rand::random::<u32>()));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        // The `postgres` OS user must reach its data directory inside.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(Self { path, keep })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("chaos: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a short command to completion, its output appended to `log`; an error names the
/// command and shows the end of the log.
async fn run_logged(mut command: std::process::Command, log: &Path, what: &str) -> Result<()> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Its own process group: a Ctrl-C in the terminal reaches only the suite, which then
        // cleans up in order.
        .process_group(0);
    let mut command = tokio::process::Command::from(command);
    let status = tokio::time::timeout(Duration::from_secs(120), command.status())
        .await
        .with_context(|| format!("{what}: no exit within 120 s"))?
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!(
            "{what} failed ({status}); end of {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    Ok(())
}

/// The last `n` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|line| format!("    | {line}\n"))
        .collect()
}

/// Sends `signal` to a whole process group.
fn kill_group(pgid: u32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill has no memory preconditions; a stale group id just fails with ESRCH.
        unsafe {
            libc::kill(-(pgid as i32), signal);
        }
    }
}

/// A private RabbitMQ node: `rabbitmq-server` in the foreground, its own node name, ports,
/// data, logs, config and Erlang cookie (in its own `HOME`), so `rabbitmqctl` with the same
/// environment controls it and nothing else.
pub struct Rabbit {
    dir: PathBuf,
    /// Its `HOME`, where its Erlang cookie is: the nodes of a cluster share one.
    home: PathBuf,
    pub node: String,
    pub port: u16,
    pub dist_port: u16,
    scripts: PathBuf,
    /// The `rabbitmq-server` shell, leader of its own process group (beam and helpers in it).
    child: Option<tokio::process::Child>,
    pub log: PathBuf,
}

impl Rabbit {
    pub async fn start(root: &Path) -> Result<Self> {
        let node = format!("chaos-{:06x}@localhost", rand::random::<u32>() & 0xff_ffff);
        let dir = root.join("rabbitmq");
        let mut rabbit = Self::launch_new(&dir, node, dir.join("home"))?;
        rabbit.wait_ready(Duration::from_secs(90)).await?;
        Ok(rabbit)
    }

    /// A node named `node` in `dir`, with `home` as its `HOME`, launched but not yet waited for.
    pub fn launch_new(dir: &Path, node: String, home: PathBuf) -> Result<Self> {
        let dir = dir.to_path_buf();
        for sub in ["mnesia", "log"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::create_dir_all(&home)?;
        let port = spare_port()?;
        let dist_port = spare_port()?;
        fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        fs::write(dir.join("advanced.config"), "[].\n")?;
        fs::write(dir.join("enabled_plugins"), "[].\n")?;
        fs::write(dir.join("rabbitmq-env.conf"), "")?;
        // The Debian wrappers in /usr/sbin re-run everything as the `rabbitmq` user with its
        // HOME (and cookie) when started as root; the scripts behind them take our environment.
        let scripts = ["/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"]
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("rabbitmq-server").is_file())
            .unwrap_or_default();
        let mut rabbit = Self {
            node,
            log: dir.join("server.log"),
            dir,
            home,
            port,
            dist_port,
            scripts,
            child: None,
        };
        rabbit.launch()?;
        Ok(rabbit)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut command = std::process::Command::new(self.scripts.join(program));
        let dir = &self.dir;
        let path = |name: &str| dir.join(name).into_os_string();
        command
            .current_dir(dir)
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("rabbitmq.pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
        command
    }

    fn launch(&mut self) -> Result<()> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = self.command("rabbitmq-server");
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = tokio::process::Command::from(command)
            .spawn()
            .context("cannot start rabbitmq-server")?;
        self.child = Some(child);
        Ok(())
    }

    /// True when an AMQP connection opens and a channel works.
    pub async fn accepts(&self) -> bool {
        let Ok(connection) =
            pokeq_shared::broker::connect_once(&self.url(), "chaos-probe", None).await
        else {
            return false;
        };
        let ok = connection.create_channel().await.is_ok();
        let _ = connection
            .close(200, lapin::types::ShortString::from("probe"))
            .await;
        ok
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "rabbitmq-server exited ({status}) while starting; end of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 25)
                );
            }
            if self.accepts().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "RabbitMQ node {} not ready within {timeout:?}; end of {}:\n{}",
                    self.node,
                    self.log.display(),
                    tail(&self.log, 25)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A real stop: `rabbitmqctl stop` (the node shuts down cleanly and its process exits);
    /// SIGTERM, then SIGKILL of the process group if that does not work.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut ctl = self.command("rabbitmqctl");
        ctl.args(["-n", &self.node, "stop"]);
        let ctl_log = self.dir.join("rabbitmqctl.log");
        if let Err(error) = run_logged(ctl, &ctl_log, "rabbitmqctl stop").await {
            eprintln!("chaos: {error:#}; sending SIGTERM instead");
            if let Some(pid) = child.id() {
                kill_group(pid, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("chaos: RabbitMQ node still running 60 s after stop; SIGKILL");
                if let Some(pid) = child.id() {
                    kill_group(pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
            }
        }
        // Helpers of the node (erl_child_setup, inet_gethost) share its process group.
        if let Some(pid) = child.id() {
            kill_group(pid, libc::SIGKILL);
        }
        Ok(())
    }

    /// Runs `rabbitmqctl -n <this node> <args>` to completion, its output appended to the
    /// node's `rabbitmqctl.log`.
    pub async fn ctl(&self, args: &[&str]) -> Result<()> {
        let mut ctl = self.command("rabbitmqctl");
        ctl.args(["-n", &self.node]).args(args);
        let what = format!("rabbitmqctl {}", args.join(" "));
        run_logged(ctl, &self.dir.join("rabbitmqctl.log"), &what).await
    }

    /// What `program` (`rabbitmqctl`, `rabbitmq-queues`) prints for `args` against this node.
    pub async fn query(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut command = self.command(program);
        command.args(["-n", &self.node]).args(args);
        command.stdin(Stdio::null()).process_group(0);
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::from(command).output(),
        )
        .await
        .with_context(|| format!("{program} {}: no answer within 60 s", args.join(" ")))?
        .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Freezes the node (SIGSTOP to its process group): it answers nothing, confirms nothing,
    /// until [`Self::kill`] ends it.
    pub fn freeze(&self) {
        if let Some(pid) = self.child.as_ref().and_then(|child| child.id()) {
            kill_group(pid, libc::SIGSTOP);
        }
    }

    /// A crash: SIGKILL to the node's whole process group, no goodbye to anyone.
    pub async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            kill_group(pid, libc::SIGKILL);
        }
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }

    /// Starts the node again (same data, ports and name) and waits until it takes connections.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.child.is_none() {
            self.launch()?;
        }
        self.wait_ready(Duration::from_secs(120)).await
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                kill_group(pid, libc::SIGKILL);
            }
            let _ = child.start_kill();
        }
    }
}

/// A private Postgres cluster: `initdb` and `pg_ctl` (as the `postgres` OS user through
/// `runuser` when the suite runs as root, since both refuse to run as root), trust
/// authentication, TCP on 127.0.0.1 only and its socket in its own directory.
pub struct Postgres {
    dir: PathBuf,
    data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    ctl_log: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    pub async fn start(root: &Path) -> Result<Self> {
        let dir = root.join("postgres");
        fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:", &dir.to_string_lossy()])
                .status()
                .context("cannot run chown")?;
            if !status.success() {
                bail!(
                    "chown postgres: {} failed: is there a `postgres` OS user?",
                    dir.display()
                );
            }
        }
        let mut pg = Self {
            data: dir.join("data"),
            log: dir.join("server.log"),
            ctl_log: root.join("pg_ctl.log"),
            port: spare_port()?,
            dir,
            as_postgres,
            running: false,
        };
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&pg.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_logged(initdb, &pg.ctl_log, "initdb").await?;
        let settings = format!(
            "\n# pokeq chaos suite\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = 300\nfsync = off\n",
            pg.port,
            pg.dir.display()
        );
        let conf = pg.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).context("cannot read postgresql.conf")?;
        text.push_str(&settings);
        fs::write(&conf, text)?;
        pg.start_again().await?;
        Ok(pg)
    }

    /// `program` from the Postgres binaries, run as `postgres` when we are root.
    fn command(&self, program: &str) -> std::process::Command {
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            std::process::Command::new(program)
        };
        command.current_dir(&self.dir);
        command
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn start_again(&mut self) -> Result<()> {
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"]);
        run_logged(start, &self.ctl_log, "pg_ctl start")
            .await
            .map_err(|e| {
                e.context(format!(
                    "end of {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 15)
                ))
            })?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m <mode>` (`fast`: clean shutdown; `immediate`: like a crash, with
    /// recovery at the next start).
    pub async fn stop(&mut self, mode: &str) -> Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        run_logged(stop, &self.ctl_log, "pg_ctl stop").await?;
        self.running = false;
        Ok(())
    }

    pub fn running(&self) -> bool {
        self.running
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Always try: a restart may have failed half-way and left a postmaster behind.
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }
}
