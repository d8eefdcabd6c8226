//! The `object-store` provider against moto_server on loopback, beside the aws CLI
//! (`aws s3 cp`, from PyPI `awscli` in the test virtualenv) on the same objects at the
//! same concurrency (10, the CLI's default; stagehost's `concurrency` and transfers
//! set to match), each upload into a fresh server (moto slows as it fills): 1,000 objects of 1 MiB and one of 1 GiB, in and out. Prints times,
//! the ratio to the CLI and our peak RSS; asserts nothing about time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p stagehost-tests --bench object_store`
//! (the CLI: `target/test-venv/bin/pip install awscli`; `-- small` or `-- big` runs one
//! case).

use std::path::Path;
use std::process::Command;

use stagehost_tests::bench::{measure, wanted, write_file};
use stagehost_tests::s3d::Moto;
use stagehost_tests::{stagehost_bin_in, target_root, Sandbox};

const CONCURRENCY: usize = 10;

fn aws(moto: &Moto, args: &[&str]) -> Command {
    let mut c = Command::new(target_root().join("test-venv/bin/aws"));
    c.args([
        "--endpoint-url",
        &moto.endpoint(),
        "--only-show-errors",
        "s3",
    ])
    .args(args)
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_DEFAULT_REGION", "us-east-1")
    .env("AWS_CONFIG_FILE", "/dev/null");
    c
}

fn ours(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Command {
    let mut c = sandbox.command(&stagehost_bin_in("release"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    c
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
}

fn line(name: &str, theirs: (f64, i64), ours: (f64, i64)) {
    println!(
        "{name:<22} aws s3 cp {:>6.2}s | stagehost {:>6.2}s = {:.2}x the CLI ({:.1} MiB peak RSS)",
        theirs.0,
        ours.0,
        ours.0 / theirs.0,
        ours.1 as f64 / 1024.0
    );
}

/// Uploads then downloads `names` (files in `src`), each way by the CLI and by us.
/// A fresh moto with the bucket `bench`: moto slows as it holds more, so each
/// measured upload gets a server of its own.
fn fresh_moto() -> Moto {
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='bench')\n");
    moto
}

fn config(sandbox: &Sandbox, moto: &Moto) -> std::path::PathBuf {
    sandbox.write(
        "site.toml",
        format!(
            "[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {:?}, concurrency = {CONCURRENCY} }}\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"s3\"]\n[transfers]\nmax_concurrent = {CONCURRENCY}\nper_host = {CONCURRENCY}\n",
            moto.endpoint()
        ),
    )
}

/// Uploads then downloads `names` (files in `src`), each way by the CLI and by us.
fn case(sandbox: &Sandbox, label: &str, src: &Path, names: &[String]) {
    // The key prefix: the label without spaces.
    let name = &label.replace(' ', "");
    let upload = |moto: &Moto| {
        let mut c = aws(moto, &["cp", "--recursive"]);
        c.arg(src).arg(format!("s3://bench/{name}/"));
        c
    };
    // Out: the CLI copies the directory; stagehost runs one task whose outputs they
    // are. Each into a fresh server.
    let moto = fresh_moto();
    let their_out = measure(upload(&moto), "aws s3 cp (out)");
    drop(moto);
    let moto = fresh_moto();
    let wd = sandbox.join("wd");
    fresh(&wd);
    for n in names {
        std::fs::hard_link(src.join(n), wd.join(n)).expect("link into wd");
    }
    let outputs: Vec<String> = names
        .iter()
        .map(|n| format!("\"s3://bench/{name}/{n}\""))
        .collect();
    let flow = sandbox.write(
        "flow.toml",
        format!(
            "[[task]]\nname = \"publish\"\ncommand = \"true\"\noutputs = [{}]\n",
            outputs.join(", ")
        ),
    );
    let cfg = config(sandbox, &moto);
    let our_out = measure(
        ours(sandbox, &cfg, &["run", "-q", flow.to_str().unwrap()]),
        "stagehost run (out)",
    );
    line(&format!("{label} out"), their_out, our_out);

    // In, from the server our upload filled: the CLI copies the prefix down, and
    // stagehost stages every object in.
    let dest = sandbox.join("cli-in");
    fresh(&dest);
    let their_in = measure(
        {
            let mut c = aws(
                &moto,
                &["cp", "--recursive", &format!("s3://bench/{name}/")],
            );
            c.arg(&dest);
            c
        },
        "aws s3 cp (in)",
    );
    fresh(&wd);
    let urls: Vec<String> = names
        .iter()
        .map(|n| format!("s3://bench/{name}/{n}"))
        .collect();
    let mut args = vec!["stage", "in", "-j", "10"];
    args.extend(urls.iter().map(String::as_str));
    let our_in = measure(ours(sandbox, &cfg, &args), "stagehost stage in");
    line(&format!("{label} in"), their_in, our_in);
}

fn main() {
    if !target_root().join("test-venv/bin/aws").exists() {
        println!("the aws CLI is not installed: target/test-venv/bin/pip install awscli");
        return;
    }
    let sandbox = Sandbox::new();
    println!("object-store provider vs aws s3 cp, moto on loopback, {CONCURRENCY} at once:");
    if wanted("small") {
        let src = sandbox.join("small");
        fresh(&src);
        let names: Vec<String> = (0..1000).map(|i| format!("f{i:04}.bin")).collect();
        for n in &names {
            write_file(&src.join(n), 1 << 20);
        }
        case(&sandbox, "1000 x 1 MiB", &src, &names);
    }
    if wanted("big") {
        let src = sandbox.join("big");
        fresh(&src);
        let names = vec!["g.bin".to_owned()];
        write_file(&src.join("g.bin"), 1 << 30);
        case(&sandbox, "1 x 1 GiB", &src, &names);
    }
}
