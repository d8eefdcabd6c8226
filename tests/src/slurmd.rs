//! A Slurm cluster of one node on 127.0.0.1 for the `slurm` executor's tests, from
//! Debian's packages (slurmctld, slurmd, slurm-client, munge): its own munge key and
//! socket, `slurmctld -D` and `slurmd -D -N node1` with a minimal `slurm.conf`
//! (scheduling without delay, so a job starts in about a second). Every job is
//! cancelled and every daemon stopped by its pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::httpd::free_port;
use crate::stop_child;

/// The cluster.
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    munged: Child,
    slurmctld: Child,
    slurmd: Child,
}

fn daemon(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: scripts/install-test-deps installs slurmctld, slurmd, slurm-client and munge"
    );
    path
}

impl SlurmCluster {
    /// Starts munged, slurmctld and slurmd, and waits until the node is idle.
    pub fn start() -> SlurmCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["state", "spool", "log", "munge"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let key: Vec<u8> = (0..1024).map(|i| (i * 7 + 13) as u8).collect();
        let key_path = d.join("munge/munge.key");
        std::fs::write(&key_path, key).expect("munge key");
        std::fs::set_permissions(
            &key_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod key");
        let socket = d.join("munge/munge.socket");
        let munged = Command::new(daemon("/usr/sbin/munged"))
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key_path.display()))
            .arg(format!(
                "--pid-file={}",
                d.join("munge/munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("munge/munged.log").display()
            ))
            .arg(format!("--seed-file={}", d.join("munge/seed").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("munged starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "munged made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (ctld_port, d_port) = (free_port(), free_port());
        let conf = format!(
            "ClusterName=stagehost\nSlurmctldHost=localhost(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\nAuthType=auth/munge\nCredType=cred/munge\n\
             AuthInfo=socket={socket}\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nSlurmdParameters=config_overrides\n\
             ReturnToService=2\nSchedulerParameters=batch_sched_delay=0,sched_min_interval=0\nMpiDefault=none\n\
             KillWait=2\nMinJobAge=600\n\
             NodeName=node1 NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN\n\
             PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP\n",
            socket = socket.display(),
            d = d.display(),
        );
        let conf_path = d.join("slurm.conf");
        std::fs::write(&conf_path, conf).expect("slurm.conf");
        let spawn = |bin: &str, args: &[&str]| {
            Command::new(daemon(bin))
                .args(args)
                .arg("-f")
                .arg(&conf_path)
                .env("SLURM_CONF", &conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{bin} starts: {e}"))
        };
        let mut slurmctld = spawn("/usr/sbin/slurmctld", &["-D"]);
        crate::wait_for_port(&mut slurmctld, ctld_port, "slurmctld");
        let mut slurmd = spawn("/usr/sbin/slurmd", &["-D", "-N", "node1"]);
        crate::wait_for_port(&mut slurmd, d_port, "slurmd");
        let cluster = SlurmCluster {
            dir,
            munged,
            slurmctld,
            slurmd,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = cluster.client("sinfo").args(["-h", "-o", "%t"]).output();
            if let Ok(out) = state {
                if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm node never became idle"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `slurm.conf`, for `SLURM_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm client command (`squeue`, `sbatch`, `scancel`, ...) of this cluster.
    pub fn client(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// Job ids Slurm still lists (pending, running or completing).
    pub fn jobs(&self) -> Vec<String> {
        let out = self
            .client("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .expect("squeue runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Waits until a job is running; its id.
    pub fn wait_for_running_job(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .client("squeue")
                .args(["-h", "-t", "RUNNING", "-o", "%i"])
                .output()
                .expect("squeue runs");
            if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
                return id.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no job started running");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = self
            .client("scancel")
            .arg("--full")
            .arg("--user=root")
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.jobs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop_child(&mut self.slurmd, libc::SIGTERM);
        stop_child(&mut self.slurmctld, libc::SIGTERM);
        stop_child(&mut self.munged, libc::SIGTERM);
    }
}
