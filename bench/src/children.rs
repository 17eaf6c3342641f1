//! Child processes the benchmark owns: each in its own process group, killed by the kernel if
//! the benchmark dies (`PR_SET_PDEATHSIG`), killed and reaped when its handle drops, and reaped
//! with `wait4` so its exact CPU time is known. (Not its peak RSS: `ru_maxrss` survives
//! `exec` and so reports the forked copy of this process; read VmHWM instead.)

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs;

/// How a child ended, from `wait4`.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: i32,
    /// User + system CPU seconds over the whole life of the process.
    pub cpu_s: f64,
    pub at: Instant,
}

impl Exit {
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {}", self.status)
        }
    }
}

pub struct Child {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
    exit: Option<Exit>,
}

/// Starts `cmd` with stdout piped (returned) and stderr appended to `log`.
pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<(Child, ChildStdout)> {
    let log_file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe, and the closure allocates nothing: both
    // errors are raw OS error codes (`io::Error::other` would box its message on the heap, which
    // is not safe between fork and exec).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                // The benchmark died before prctl took effect: "no such process".
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
    let stdout = child
        .stdout
        .take()
        .context("child stdout was not captured")?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // Dropping a std Child neither kills nor waits: this handle takes over.
    drop(child);
    Ok((
        Child {
            name: name.to_owned(),
            pid,
            log: log.to_owned(),
            exit: None,
        },
        stdout,
    ))
}

impl Child {
    /// The exit, if the process has ended (reaps it).
    pub fn try_wait(&mut self) -> anyhow::Result<Option<Exit>> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        let mut status = 0;
        // SAFETY: wait4 writes into the zeroed struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == 0 {
            return Ok(None);
        }
        if rc < 0 {
            bail!(
                "wait4({}) for {}: {}",
                self.pid,
                self.name,
                std::io::Error::last_os_error()
            );
        }
        let exit = Exit {
            status,
            cpu_s: procfs::timeval_s(usage.ru_utime) + procfs::timeval_s(usage.ru_stime),
            at: Instant::now(),
        };
        self.exit = Some(exit);
        Ok(Some(exit))
    }

    /// Waits up to `timeout` for the process to end; `None` if it is still running.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<Exit>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            // SAFETY: plain syscall on a pid we have not reaped, so it is still ours.
            unsafe {
                libc::kill(self.pid, signal);
            }
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Exit> {
        self.signal(libc::SIGTERM);
        if let Some(exit) = self.wait(grace).await? {
            return Ok(exit);
        }
        eprintln!(
            "  {} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        self.signal(libc::SIGKILL);
        match self.wait(Duration::from_secs(10)).await? {
            Some(exit) => Ok(exit),
            None => bail!("{} (pid {}) survived SIGKILL", self.name, self.pid),
        }
    }

    /// The last `n` lines of the child's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- last lines of {} ---\n{}",
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // SAFETY: the pid is unreaped, hence still ours; a blocking wait after SIGKILL is short.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

/// Reads a child's stdout on a thread: the first line is sent back, the rest drained.
pub fn first_line(stdout: ChildStdout) -> tokio::sync::oneshot::Receiver<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx
}

/// Reads a child's whole stdout on a thread.
pub fn all_output(stdout: ChildStdout) -> tokio::sync::oneshot::Receiver<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        let _ = tx.send(text);
    });
    rx
}
