//! The `object-store` provider, loaded from the built `.so`, against moto_server on
//! loopback (and a throttling proxy of our own in front of it).

use std::path::{Path, PathBuf};

use stagehost_tests::httpd::pattern;
use stagehost_tests::s3d::{FakeGcs, Fault, FaultProxy, Moto, S3rver};
use stagehost_tests::*;

/// The environment every run gets: moto's test credentials, as the aws CLI reads them.
const ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
    ("AWS_REGION", "us-east-1"),
];

/// A config with one `object-store` instance for `endpoint` (more settings inline).
fn s3_config(sandbox: &Sandbox, name: &str, endpoint: &str, settings: &str) -> PathBuf {
    sandbox.write(
        name,
        format!(
            "[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {endpoint:?}, part_size_mib = 5{settings} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"s3\", \"file\"]\n\n[transfers]\nretries = 1\nbackoff_initial_ms = 50\n"
        ),
    )
}

fn stage_in(sandbox: &Sandbox, cfg: &Path, url: &str) -> Run {
    stage_in_as(sandbox, cfg, url, &ENV)
}

fn stage_out(sandbox: &Sandbox, cfg: &Path, local: &Path, url: &str) -> Run {
    stage_out_as(sandbox, cfg, local, url, &ENV)
}

/// `stage out --json LOCAL URL` with `env` in place of the test credentials.
fn stage_out_as(
    sandbox: &Sandbox,
    cfg: &Path,
    local: &Path,
    url: &str,
    env: &[(&str, &str)],
) -> Run {
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "out",
        "--json",
        local.to_str().unwrap(),
        url,
    ];
    sandbox.run_env(&args, env)
}

#[test]
fn objects_small_and_multipart_go_out_and_come_back_and_a_rerun_moves_nothing() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    for (name, size) in [
        ("empty.bin", 0usize),
        ("small.bin", 100_000),
        ("big.bin", 12 << 20),
    ] {
        let data = pattern(size);
        let local = sandbox.write(format!("out/{name}"), &data);
        let url = format!("s3://data/results/{name}");
        let out = stage_out(&sandbox, &cfg, &local, &url);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(local.exists(), "the local file is kept");
        // What the store holds, seen by boto3: the bytes, and for the big one the
        // multipart ETag (12 MiB in 5 MiB parts: 3).
        let seen = moto.boto(&format!(
            "o = s3.get_object(Bucket='data', Key='results/{name}')\nb = o['Body'].read()\nprint(len(b), o['ETag'])\n"
        ));
        let (len, etag) = seen.trim().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), size);
        assert_eq!(etag.ends_with("-3\""), size > 5 << 20, "{name}: {etag}");

        let out = stage_in(&sandbox, &cfg, &url);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(std::fs::read(sandbox.join("wd").join(name)).unwrap(), data);
        assert_eq!(out.json()["files"][0]["cached"], false);
        // Again: the same ETag, no bytes moved.
        let out = stage_in(&sandbox, &cfg, &url);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.json()["files"][0]["cached"], true, "{name}");
    }
    // A changed object is fetched again.
    moto.boto("s3.put_object(Bucket='data', Key='results/small.bin', Body=b'changed')\n");
    let out = stage_in(&sandbox, &cfg, "s3://data/results/small.bin");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["files"][0]["cached"], false);
    assert_eq!(
        std::fs::read(sandbox.join("wd/small.bin")).unwrap(),
        b"changed"
    );
    assert!(!out.stdout.contains("test-secret-key") && !out.stderr.contains("test-secret-key"));
}

#[test]
fn a_missing_key_and_a_missing_bucket_are_told_apart() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let out = stage_in(&sandbox, &cfg, "s3://data/absent.bin");
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    // A failure's report says what was planned and tried, as `run --report` does.
    let file = &out.json()["files"][0];
    assert_eq!(file["ok"], false);
    assert_eq!(file["modes"], serde_json::json!(["separate-job"]));
    assert_eq!(file["attempts"], 1, "not found is not retried");
    assert!(file["local_path"]
        .as_str()
        .is_some_and(|p| p.ends_with("absent.bin")));
    assert_eq!(out.json()["summary"]["files_failed"], 1);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("separate job: not found:") && error.contains("no such object"),
        "{error}"
    );
    let out = stage_in(&sandbox, &cfg, "s3://nobucket/absent.bin");
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("the bucket nobucket does not exist"),
        "{error}"
    );
    let local = sandbox.write("x.bin", "x");
    let out = stage_out(&sandbox, &cfg, &local, "s3://nobucket/x.bin");
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("the bucket nobucket does not exist") && error.contains("is kept"),
        "{error}"
    );
    assert!(!sandbox.join("wd/absent.bin").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

/// `stage in --json URL` with `env` in place of the test credentials.
fn stage_in_as(sandbox: &Sandbox, cfg: &Path, url: &str, env: &[(&str, &str)]) -> Run {
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "stage",
        "in",
        "--json",
        url,
    ];
    sandbox.run_env(&args, env)
}

/// The `error` of a one-file `--json` report, after checking that it failed with the
/// exit code of the class the report gives it.
fn error_of(out: &Run) -> String {
    let file = &out.json()["files"][0];
    let code = match file["error_class"].as_str() {
        Some("not_found") => 3,
        Some("permission") => 4,
        Some("integrity") => 5,
        Some("transient") => 6,
        _ => 1,
    };
    assert_eq!(out.code, Some(code), "{}", out.stderr);
    file["error"].as_str().unwrap().to_owned()
}

#[test]
fn bad_credentials_are_refused_and_each_cause_is_named() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\ns3.create_bucket(Bucket='locked')\ns3.put_object(Bucket='data', Key='k', Body=b'payload')\n");
    let (id, secret) = moto.iam_user("data");
    moto.require_auth();
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let region = ("AWS_REGION", "us-east-1");
    let good = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        region,
    ];
    // The user's own key works, for a single GET and for a signed multipart upload.
    let out = stage_in_as(&sandbox, &cfg, "s3://data/k", &good);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(sandbox.join("wd/k")).unwrap(), b"payload");
    let big = sandbox.write("big.bin", pattern(11 << 20));
    let out = stage_out_as(&sandbox, &cfg, &big, "s3://data/big.bin", &good);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The wrong secret for a real key.
    let wrong_secret = "wrong-secret-0123456789";
    let out = stage_in_as(
        &sandbox,
        &cfg,
        "s3://data/k",
        &[
            ("AWS_ACCESS_KEY_ID", id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", wrong_secret),
            region,
        ],
    );
    let error = error_of(&out);
    assert!(
        error.contains("permission denied:")
            && error.contains("the secret key does not match the access key ID")
            && error.contains("SignatureDoesNotMatch"),
        "{error}"
    );
    assert!(!out.stdout.contains(wrong_secret) && !out.stderr.contains(wrong_secret));
    // A key the store has never issued.
    let out = stage_in_as(
        &sandbox,
        &cfg,
        "s3://data/k",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000"),
            ("AWS_SECRET_ACCESS_KEY", wrong_secret),
            region,
        ],
    );
    let error = error_of(&out);
    assert!(
        error.contains("the store does not know the access key ID")
            && error.contains("InvalidAccessKeyId"),
        "{error}"
    );
    // A good key on a bucket its policy does not cover, both ways; the local file kept.
    let out = stage_in_as(&sandbox, &cfg, "s3://locked/k", &good);
    let error = error_of(&out);
    assert!(
        error.contains("permission denied:") && error.contains("access denied (AccessDenied;"),
        "{error}"
    );
    let error = error_of(&stage_out_as(
        &sandbox,
        &cfg,
        &big,
        "s3://locked/big.bin",
        &good,
    ));
    assert!(
        error.contains("access denied (AccessDenied;") && error.contains("is kept"),
        "{error}"
    );
    assert!(big.exists());
    assert!(!out.stdout.contains(&secret) && !out.stderr.contains(&secret));
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn checksums_the_store_gives_are_verified_and_a_corrupted_body_is_refused() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    // boto3 uploads with the checksum asked for; S3 (and moto) keep it with the object.
    moto.boto(
        "s3.create_bucket(Bucket='data')\nfor alg in ['CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256']:\n    s3.put_object(Bucket='data', Key='o-' + alg, Body=b'checked ' * 1000, ChecksumAlgorithm=alg)\n",
    );
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let debug = [ENV[0], ENV[1], ENV[2], ("RUST_LOG", "debug")];
    for alg in ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] {
        let url = format!("s3://data/o-{alg}");
        let out = stage_in_as(&sandbox, &cfg, &url, &debug);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{alg} checksum verified")),
            "{alg}: {}",
            out.stderr
        );
    }
    // A multipart upload of stagehost's declares its checksum (SHA-256 unless set
    // otherwise), so the store keeps one: composite for SHA-256 (of the parts' own;
    // not checkable whole), whole-object for CRC64NVME, which the next stage-in checks.
    for (setting, alg, seen) in [
        ("", "SHA256", "composite"),
        (", upload_checksum = \"crc64nvme\"", "CRC64NVME", "verified"),
    ] {
        let cfg = s3_config(&sandbox, "up.toml", &moto.endpoint(), setting);
        let local = sandbox.write("up.bin", pattern(12 << 20));
        let key = format!("up-{alg}");
        let url = format!("s3://data/{key}");
        let out = stage_out_as(&sandbox, &cfg, &local, &url, &ENV);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let kept = moto.boto(&format!(
            "h = s3.head_object(Bucket='data', Key='{key}', ChecksumMode='ENABLED')\nprint(h.get('Checksum{alg}') is not None)\n"
        ));
        assert_eq!(kept.trim(), "True", "{alg}");
        let out = stage_in_as(&sandbox, &cfg, &url, &debug);
        assert_eq!(out.code, Some(0), "{}", out.stdout);
        assert_eq!(
            std::fs::read(sandbox.join("wd").join(&key)).unwrap(),
            pattern(12 << 20)
        );
        let line = match seen {
            "verified" => format!("{alg} checksum verified"),
            _ => format!("its {alg} checksum is composite"),
        };
        assert!(out.stderr.contains(&line), "{alg}: {}", out.stderr);
    }
    // Through a proxy that flips the last byte of each body: refused, nothing left.
    let port: u16 = moto.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port, Fault::CorruptBodies);
    let cfg = s3_config(&sandbox, "corrupt.toml", &proxy.endpoint(), "");
    std::fs::remove_dir_all(sandbox.join("wd")).unwrap();
    let out = stage_in(&sandbox, &cfg, "s3://data/o-SHA256");
    let error = error_of(&out);
    assert!(
        error.contains("integrity")
            && error.contains("the bytes' SHA256 is")
            && error.contains("the store says "),
        "{error}"
    );
    assert!(proxy.injected.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(!sandbox.join("wd/o-SHA256").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
}

#[test]
fn a_second_s3_server_s3rver_serves_round_trips_and_refuses_an_unknown_key() {
    let sandbox = Sandbox::new();
    let s3rver = S3rver::start("data");
    let cfg = s3_config(&sandbox, "s3rver.toml", &s3rver.endpoint(), "");
    let env = [
        ("AWS_ACCESS_KEY_ID", S3rver::KEY),
        ("AWS_SECRET_ACCESS_KEY", S3rver::KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    for (name, size) in [("small.bin", 70_000usize), ("big.bin", 12 << 20)] {
        let data = pattern(size);
        let local = sandbox.write(format!("out/{name}"), &data);
        let url = format!("s3://data/{name}");
        let out = stage_out_as(&sandbox, &cfg, &local, &url, &env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        // The big one went as a multipart upload (12 MiB in 5 MiB parts); s3rver
        // gives the joined object the MD5 of all its bytes as its ETag.
        let seen = s3rver.boto(&format!(
            "import hashlib\no = s3.get_object(Bucket='data', Key='{name}')\nb = o['Body'].read()\nprint(len(b), o['ETag'].strip('\"') == hashlib.md5(b).hexdigest())\n"
        ));
        assert_eq!(seen.trim(), format!("{size} True"), "{name}");
        let out = stage_in_as(&sandbox, &cfg, &url, &env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(std::fs::read(sandbox.join("wd").join(name)).unwrap(), data);
        let out = stage_in_as(&sandbox, &cfg, &url, &env);
        assert_eq!(
            out.json()["files"][0]["cached"],
            true,
            "{name}: {}",
            out.stderr
        );
    }
    let error = error_of(&stage_in_as(&sandbox, &cfg, "s3://data/absent", &env));
    assert!(error.contains("no such object"), "{error}");
    let error = error_of(&stage_in_as(&sandbox, &cfg, "s3://nobucket/k", &env));
    assert!(
        error.contains("the bucket nobucket does not exist"),
        "{error}"
    );
    let error = error_of(&stage_in_as(
        &sandbox,
        &cfg,
        "s3://data/small.bin",
        &[
            ("AWS_ACCESS_KEY_ID", "NOTAKEY"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("AWS_REGION", "us-east-1"),
        ],
    ));
    assert!(error.contains("InvalidAccessKeyId"), "{error}");
}

#[test]
fn throttled_parts_fail_the_upload_and_leave_no_parts_behind() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\n");
    let port: u16 = moto.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port, Fault::SlowDownParts);
    let cfg = s3_config(
        &sandbox,
        "throttled.toml",
        &proxy.endpoint(),
        ", max_retries = 0",
    );
    let local = sandbox.write("big.bin", pattern(11 << 20));
    let out = stage_out(&sandbox, &cfg, &local, "s3://data/big.bin");
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("transient") && error.contains("throttling") && error.contains("is kept"),
        "{error}"
    );
    assert!(proxy.injected.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(local.exists());
    // Aborted: no multipart upload is left open, and no object was made.
    let left = moto.boto(
        "print(len(s3.list_multipart_uploads(Bucket='data').get('Uploads', [])), s3.list_objects_v2(Bucket='data').get('KeyCount', 0))\n",
    );
    assert_eq!(left.trim(), "0 0");
}

#[test]
fn a_workflow_reads_from_s3_and_writes_back_to_s3() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto(
        "s3.create_bucket(Bucket='data')\ns3.put_object(Bucket='data', Key='in/words.txt', Body=b'b\\na\\nc\\n')\n",
    );
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let out = sandbox.run_workflow_env(
        &cfg,
        "[[task]]\nname = \"sort\"\ncommand = \"sort {inputs[0]} > {outputs[0]}\"\ninputs = [\"s3://data/in/words.txt\"]\noutputs = [\"s3://data/out/sorted.txt\"]\n",
        &ENV,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let sorted = moto.boto(
        "print(s3.get_object(Bucket='data', Key='out/sorted.txt')['Body'].read().decode(), end='')\n",
    );
    assert_eq!(sorted, "a\nb\nc\n");
    for file in out.json()["tasks"][0]["files"].as_array().unwrap() {
        assert_eq!(file["provider"], "s3", "{file:#}");
    }
}

#[test]
fn credentials_region_and_endpoint_come_from_a_profile_of_the_shared_aws_files() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\ns3.put_object(Bucket='data', Key='p.txt', Body=b'from a profile')\n");
    // No endpoint in the settings and no AWS_* keys: only the profile names them.
    sandbox.write(
        "home/.aws/credentials",
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[site]\naws_access_key_id = test\naws_secret_access_key = profile-secret\n",
    );
    sandbox.write(
        "home/.aws/config",
        format!(
            "[profile site]\nregion = us-east-1\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    );
    let cfg = sandbox.write(
        "profile.toml",
        "[[provider]]\nname = \"s3\"\nplugin = \"object-store\"\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"s3\"]\n",
    );
    let out = stage_in_as(
        &sandbox,
        &cfg,
        "s3://data/p.txt",
        &[("AWS_PROFILE", "site")],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/p.txt")).unwrap(),
        "from a profile"
    );
    assert!(!out.stdout.contains("profile-secret") && !out.stderr.contains("profile-secret"));
    // `config show` names the provider's settings, never the profile's keys.
    let shown = sandbox.run_env(
        &["--config", cfg.to_str().unwrap(), "config", "show"],
        &[("AWS_PROFILE", "site")],
    );
    assert!(!shown.stdout.contains("profile-secret"), "{}", shown.stdout);
}

#[test]
fn azure_blobs_go_out_and_come_back_through_azurite() {
    let sandbox = Sandbox::new();
    let azurite = stagehost_tests::s3d::Azurite::start();
    azurite.python("blobs.create_container('data')\n");
    let cfg = sandbox.write(
        "az.toml",
        "[[provider]]\nname = \"az\"\nplugin = \"object-store\"\nsettings = { use_emulator = true, part_size_mib = 5 }\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"az\"]\n",
    );
    let env = [("AZURITE_BLOB_STORAGE_URL", azurite.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (name, size) in [("small.bin", 70_000usize), ("big.bin", 11 << 20)] {
        let data = pattern(size);
        let local = sandbox.write(format!("out/{name}"), &data);
        let url = format!("az://data/results/{name}");
        let out = stage_out_as(&sandbox, &cfg, &local, &url, &env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let seen = azurite.python(&format!(
            "print(len(blobs.get_blob_client('data', 'results/{name}').download_blob().readall()))\n"
        ));
        assert_eq!(seen.trim().parse::<usize>().unwrap(), size);
        let out = stage_in_as(&sandbox, &cfg, &url, &env);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(std::fs::read(sandbox.join("wd").join(name)).unwrap(), data);
        assert_eq!(out.json()["files"][0]["cached"], false);
        // Again: the same ETag, no bytes moved.
        let out = stage_in_as(&sandbox, &cfg, &url, &env);
        assert_eq!(
            out.json()["files"][0]["cached"],
            true,
            "{name}: {}",
            out.stderr
        );
    }
    // A blob put in one request carries the Content-MD5 Azure computed; it is checked.
    azurite.python("blobs.get_blob_client('data', 'sdk.bin').upload_blob(b'by the SDK ' * 500)\n");
    let debug: Vec<(&str, &str)> = env.iter().copied().chain([("RUST_LOG", "debug")]).collect();
    let out = stage_in_as(&sandbox, &cfg, "az://data/sdk.bin", &debug);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("MD5 checksum verified"),
        "{}",
        out.stderr
    );
    let out = stage_in_as(&sandbox, &cfg, "az://data/absent.bin", &env);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("not found") && error.contains("no such object"),
        "{error}"
    );
    let out = stage_in_as(&sandbox, &cfg, "az://nocontainer/x.bin", &env);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let error = out.json()["files"][0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("does not exist"), "{error}");
}

/// A config with one `gs` provider at `endpoint` (with `settings` added).
fn gs_config(sandbox: &Sandbox, name: &str, endpoint: &str, settings: &str) -> PathBuf {
    sandbox.write(
        name,
        format!(
            "[[provider]]\nname = \"gs\"\nplugin = \"object-store\"\nsettings = {{ endpoint = {endpoint:?}{settings} }}\n\n[[provider]]\nname = \"file\"\nplugin = \"file\"\n\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"gs\", \"file\"]\n\n[transfers]\nretries = 1\nbackoff_initial_ms = 50\n"
        ),
    )
}

#[test]
fn gs_objects_come_in_from_fake_gcs_server_verified_and_a_missing_one_is_not_found() {
    let sandbox = Sandbox::new();
    let gcs = FakeGcs::start();
    gcs.create_bucket("data");
    // Put in through the emulator's JSON API (it takes no XML-API upload).
    let big = pattern(12 << 20);
    gcs.put("data", "runs/small.txt", b"hello gcs\n");
    gcs.put("data", "runs/big.bin", &big);
    let token = ("GCS_TOKEN", "emulator-token");
    let cfg = gs_config(
        &sandbox,
        "gs.toml",
        &gcs.endpoint(),
        ", bearer_token_env = \"GCS_TOKEN\"",
    );
    // A small object and a 12 MiB one (its rest fetched in parallel ranges), each
    // checked against the x-goog-hash the emulator sends.
    for (key, want) in [
        ("runs/small.txt", &b"hello gcs\n"[..]),
        ("runs/big.bin", &big[..]),
    ] {
        let out = stage_in_as(&sandbox, &cfg, &format!("gs://data/{key}"), &[token]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(std::fs::read(sandbox.join("wd").join(name)).unwrap(), want);
        assert_eq!(out.json()["files"][0]["ok"], true);
    }
    // The token's variable unset: the error names the variable (a name, not a secret).
    let out = stage_in_as(&sandbox, &cfg, "gs://data/runs/small.txt", &[]);
    let error = error_of(&out);
    assert!(
        error.contains("GCS_TOKEN") && error.contains("bearer_token_env"),
        "{error}"
    );
    // A missing object: not found, exit 3, nothing left.
    let out = stage_in_as(&sandbox, &cfg, "gs://data/runs/absent.bin", &[token]);
    let error = error_of(&out);
    assert!(error.contains("no such object"), "{error}");
    assert!(!sandbox.join("wd/absent.bin").exists());
    // Bodies corrupted on the way: the checksum refuses them, nothing is kept. (A
    // second emulator, answering to the proxy's address.)
    let port = stagehost_tests::httpd::free_port();
    let proxy = FaultProxy::start(port, Fault::CorruptBodies);
    let proxy_port: u16 = proxy
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let behind = FakeGcs::start_on(port, proxy_port);
    behind.create_bucket("data");
    behind.put("data", "runs/small.txt", b"hello gcs\n");
    let corrupt = gs_config(
        &sandbox,
        "corrupt.toml",
        &proxy.endpoint(),
        ", bearer_token_env = \"GCS_TOKEN\"",
    );
    std::fs::remove_dir_all(sandbox.join("wd")).unwrap();
    let out = stage_in_as(&sandbox, &corrupt, "gs://data/runs/small.txt", &[token]);
    let error = error_of(&out);
    assert!(error.contains("integrity"), "{error}");
    assert!(proxy.injected.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(!sandbox.join("wd/small.txt").exists());
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
    // Anonymous: reads need no token; an upload is refused before any request (the
    // GCS client would ask this machine's metadata server for one).
    let anonymous = gs_config(&sandbox, "anon.toml", &gcs.endpoint(), ", anonymous = true");
    let out = stage_in_as(&sandbox, &anonymous, "gs://data/runs/small.txt", &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let local = sandbox.write("up.txt", "up\n");
    let out = stage_out_as(&sandbox, &anonymous, &local, "gs://data/up.txt", &[]);
    let error = error_of(&out);
    assert!(
        error.contains("anonymous = true sends no credentials"),
        "{error}"
    );
    assert!(!error.contains("169.254"), "{error}");
}

#[test]
fn prefixes_are_listed_and_objects_stated_alike_on_moto_azurite_and_fake_gcs() {
    let sandbox = Sandbox::new();
    let tree: [(&str, &[u8]); 4] = [
        ("tree/a.txt", b"A"),
        ("tree/sub/b.txt", b"BB"),
        ("tree/sub/deeper/c.txt", b"CCC"),
        ("treetop.txt", b"not below tree/"),
    ];
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\n");
    for (key, body) in tree {
        moto.boto(&format!(
            "s3.put_object(Bucket='data', Key='{key}', Body={body:?}.encode())\n",
            body = String::from_utf8_lossy(body)
        ));
    }
    let azurite = stagehost_tests::s3d::Azurite::start();
    azurite.python("blobs.create_container('data')\n");
    for (key, body) in tree {
        azurite.python(&format!(
            "blobs.get_blob_client('data', '{key}').upload_blob({body:?}.encode())\n",
            body = String::from_utf8_lossy(body)
        ));
    }
    let gcs = FakeGcs::start();
    gcs.create_bucket("data");
    for (key, body) in tree {
        gcs.put("data", key, body);
    }
    let s3 = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let az = sandbox.write(
        "az.toml",
        "[[provider]]\nname = \"az\"\nplugin = \"object-store\"\nsettings = { use_emulator = true }\n[executor.local]\nworking_dir = \"wd\"\nstaging = [\"az\"]\n",
    );
    let gs = gs_config(
        &sandbox,
        "gs.toml",
        &gcs.endpoint(),
        ", bearer_token_env = \"GCS_TOKEN\"",
    );
    let az_env = [("AZURITE_BLOB_STORAGE_URL", azurite.url().to_owned())];
    let az_env: Vec<(&str, &str)> = az_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let stores: [(&str, &Path, Env); 3] = [
        ("s3", &s3, ENV.to_vec()),
        ("az", &az, az_env),
        ("gs", &gs, vec![("GCS_TOKEN", "emulator-token")]),
    ];
    for (scheme, cfg, env) in stores {
        let run = |args: &[&str]| {
            let mut all = vec!["--config", cfg.to_str().unwrap()];
            all.extend_from_slice(args);
            sandbox.run_env(&all, &env)
        };
        let url = |rest: &str| format!("{scheme}://data/{rest}");
        // One level: the prefix's own objects and the prefixes below it.
        let out = run(&["ls", &url("tree/")]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "a.txt\nsub/\n"),
            "{scheme}: {}",
            out.stderr
        );
        // The whole tree, with the directories its keys imply; `treetop.txt` shares the
        // prefix's letters but not its slash, and stays out.
        let out = run(&["ls", "-R", "--json", &url("tree")]);
        assert_eq!(out.code, Some(0), "{scheme}: {}", out.stderr);
        let listed: Vec<(String, String, Option<u64>)> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["kind"].as_str().unwrap().to_owned(),
                    e["size"].as_u64(),
                )
            })
            .collect();
        let want = [
            ("a.txt", "file", Some(1)),
            ("sub", "directory", None),
            ("sub/b.txt", "file", Some(2)),
            ("sub/deeper", "directory", None),
            ("sub/deeper/c.txt", "file", Some(3)),
        ];
        let want: Vec<(String, String, Option<u64>)> = want
            .iter()
            .map(|(n, k, s)| (n.to_string(), k.to_string(), *s))
            .collect();
        assert_eq!(listed, want, "{scheme}");
        assert!(
            out.json()[0]["validator"]
                .as_str()
                .is_some_and(|v| !v.is_empty())
                && out.json()[0]["modified"].as_str().is_some(),
            "{scheme}: {}",
            out.stdout
        );
        // An object, a prefix (a directory), and nothing.
        let out = run(&[
            "stat",
            "--json",
            &url("tree/sub/b.txt"),
            &url("tree/sub"),
            &url("tree/none"),
        ]);
        assert_eq!(out.code, Some(3), "{scheme}: {}", out.stderr);
        let json = out.json();
        assert_eq!(
            (json[0]["kind"].as_str(), json[0]["size"].as_u64()),
            (Some("file"), Some(2)),
            "{scheme}"
        );
        assert_eq!(json[1]["kind"], "directory", "{scheme}");
        assert_eq!(json[2]["exists"], false, "{scheme}");
        // A prefix with nothing below it does not exist.
        let out = run(&["ls", &url("nothing/")]);
        assert_eq!(out.code, Some(3), "{scheme}: {}", out.stderr);
        assert!(
            out.stderr.contains("no object has this prefix"),
            "{scheme}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_directory_goes_out_to_a_prefix_and_comes_back_file_by_file() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\ns3.create_bucket(Bucket='other')\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let cfg_s = cfg.to_str().unwrap();
    let big = pattern(7 << 20);
    sandbox.write("results/a.txt", "A");
    sandbox.write("results/sub/b c.txt", "BB");
    sandbox.write("results/sub/deeper/big.bin", &big);
    // Out: each file to the prefix, one report entry each.
    let out = sandbox.run_env(
        &[
            "--config",
            cfg_s,
            "stage",
            "out",
            "--json",
            sandbox.join("results").to_str().unwrap(),
            "s3://data/runs/1/",
        ],
        &ENV,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let urls: Vec<String> = out.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "s3://data/runs/1/a.txt",
            "s3://data/runs/1/sub/b c.txt",
            "s3://data/runs/1/sub/deeper/big.bin"
        ]
    );
    assert!(sandbox.join("results/a.txt").exists(), "a stage-out copies");
    // In: the prefix lands as a directory named after it, byte for byte.
    let out = sandbox.run_env(
        &[
            "--config",
            cfg_s,
            "stage",
            "in",
            "--json",
            "s3://data/runs/1/",
        ],
        &ENV,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json()["files"].as_array().unwrap().len(), 3);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/1/a.txt")).unwrap(),
        "A"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/1/sub/b c.txt")).unwrap(),
        "BB"
    );
    assert_eq!(
        std::fs::read(sandbox.join("wd/1/sub/deeper/big.bin")).unwrap(),
        big
    );
    assert_eq!(partial_files(sandbox.path()), Vec::<String>::new());
    // Again: every file is current, and no bytes move.
    let out = sandbox.run_env(
        &[
            "--config",
            cfg_s,
            "stage",
            "in",
            "--json",
            "s3://data/runs/1/",
        ],
        &ENV,
    );
    assert!(
        out.json()["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["cached"] == true),
        "{}",
        out.stdout
    );
    // Another directory of the same name never shares the first one's files.
    moto.boto("s3.put_object(Bucket='other', Key='x/1/a.txt', Body=b'other A')\n");
    let out = sandbox.run_env(
        &[
            "--config",
            cfg_s,
            "stage",
            "in",
            "--json",
            "s3://data/runs/1/",
            "s3://other/x/1/",
        ],
        &ENV,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let other = out.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["url"] == "s3://other/x/1/a.txt")
        .unwrap()["local_path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(other.contains("/.stagehost/"), "{other}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "other A");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("wd/1/a.txt")).unwrap(),
        "A"
    );
    // A name a URL cannot carry alike to every provider refuses the whole directory.
    moto.boto("s3.put_object(Bucket='data', Key='odd/100%.txt', Body=b'x')\ns3.put_object(Bucket='data', Key='odd/fine.txt', Body=b'y')\n");
    let out = sandbox.run_env(&["--config", cfg_s, "stage", "in", "s3://data/odd/"], &ENV);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("100%.txt") && out.stderr.contains("a name a URL cannot carry"),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("wd/odd").exists());
    // A prefix with nothing below it: not found, nothing made.
    let out = sandbox.run_env(&["--config", cfg_s, "stage", "in", "s3://data/none/"], &ENV);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(!sandbox.join("wd/none").exists());
}

#[test]
fn an_object_beside_a_prefix_of_its_name_is_listed_twice_and_refused_as_a_directory() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='clean')\nfor k in ['t/a', 't/a/b', 't/c']: s3.put_object(Bucket='clean', Key=k, Body=b'x')\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    let cfg = cfg.to_str().unwrap();
    // Both the object `a` and the prefix `a/` are shown; neither hides the other.
    let out = sandbox.run_env(&["--config", cfg, "ls", "s3://clean/t/"], &ENV);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "a\na/\nc\n"),
        "{}",
        out.stderr
    );
    let out = sandbox.run_env(&["--config", cfg, "ls", "-R", "s3://clean/t/"], &ENV);
    assert_eq!(out.stdout, "a\na/\na/b\nc\n", "{}", out.stderr);
    // As a directory to stage, it cannot be: one line, nothing moved.
    let out = sandbox.run_env(&["--config", cfg, "stage", "in", "s3://clean/t/"], &ENV);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("holds both a file and a directory named \"a\""),
        "{}",
        out.stderr
    );
    assert!(!sandbox.join("wd/t").exists());
}

#[test]
fn a_workflow_reads_a_prefix_as_a_directory_and_a_resume_skips_it_until_an_object_changes() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\nfor k in ['in/a.txt', 'in/sub/b.txt']: s3.put_object(Bucket='data', Key=k, Body=k.encode())\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"list\"\ncommand = \"cd {inputs[0]} && find . -type f | sort | xargs cat > {outputs[0]}\"\ninputs = [{ url = \"s3://data/in\", recursive = true }]\noutputs = [\"all.txt\"]\n\n[[task]]\nname = \"missing\"\ncommand = \"true\"\ninputs = [\"s3://data/none/\"]\n",
    );
    let run = |resume: bool| {
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "flow.toml",
            "--report",
            "-",
        ];
        if resume {
            args.insert(3, "--resume");
        }
        sandbox.run_env(&args, &ENV)
    };
    // The dry run lists what would move, and that the empty prefix cannot be.
    let out = sandbox.run_env(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--dry-run",
            "flow.toml",
        ],
        &ENV,
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stdout.contains("  in  s3://data/in/ -> ")
            && out.stdout.contains("/wd/in/ [a directory: 2 file(s)]")
            && out.stdout.contains("    in  s3://data/in/sub/b.txt -> ")
            && out
                .stdout
                .contains("/wd/in/sub/b.txt [provider s3, separate job]")
            && out.stdout.contains("s3://data/none/: cannot list"),
        "{}",
        out.stdout
    );
    // A dry run moves nothing (planning may make the directories files would land in).
    assert!(!sandbox.join("wd/in/a.txt").exists() && !sandbox.join("wd/in/sub/b.txt").exists());
    let out = run(false);
    // The empty prefix fails its own task (not found); the other runs.
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let report = out.json();
    let task = |name: &str| task_in(&report, name).clone();
    assert_eq!(task("list")["status"], "succeeded", "{}", out.stderr);
    assert_eq!(task("missing")["status"], "failed");
    assert!(
        task("missing")["error"]
            .as_str()
            .unwrap()
            .contains("no object has this prefix"),
        "{}",
        task("missing")
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/all.txt")).unwrap(),
        "in/a.txtin/sub/b.txt"
    );
    // The directory's entry, then one per file, each landed below it.
    let files = task("list")["files"].as_array().unwrap().clone();
    let urls: Vec<&str> = files.iter().map(|f| f["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls[..3],
        [
            "s3://data/in/",
            "s3://data/in/a.txt",
            "s3://data/in/sub/b.txt"
        ]
    );
    assert!(urls[3].ends_with("/work/all.txt"), "{urls:?}");
    assert!(files[2]["local_path"]
        .as_str()
        .unwrap()
        .ends_with("/wd/in/sub/b.txt"));
    // Nothing changed: skipped.
    let out = run(true);
    let report = out.json();
    let status = |name: &str| task_in(&report, name)["status"].clone();
    assert_eq!(status("list"), "skipped", "{}", out.stderr);
    // Proved by the directory's one listing (ETags and sizes), not by asking for each
    // file again: nothing was staged, not even a revalidation.
    let files = report["tasks"][0]["files"].as_array().unwrap().clone();
    assert_eq!(files[1]["url"], "s3://data/in/a.txt");
    for f in &files[1..3] {
        assert_eq!(
            (f["attempts"].as_u64(), f["cached"].as_bool()),
            (Some(0), Some(false)),
            "{f}"
        );
    }
    // A new object below the prefix: the task runs and reads it.
    moto.boto("s3.put_object(Bucket='data', Key='in/c.txt', Body=b'in/c.txt')\n");
    let out = run(true);
    assert_eq!(
        out.json()["tasks"][0]["status"],
        "succeeded",
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/all.txt")).unwrap(),
        "in/a.txtin/c.txtin/sub/b.txt"
    );
}

#[test]
fn a_task_fills_a_directory_output_that_goes_to_a_prefix_file_by_file_and_feeds_the_next_task() {
    let sandbox = Sandbox::new();
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='data')\n");
    let cfg = s3_config(&sandbox, "s3.toml", &moto.endpoint(), "");
    sandbox.write(
        "work/flow.toml",
        "[[task]]\nname = \"make\"\ncommand = \"mkdir {outputs[0]}/sub && printf A > {outputs[0]}/a.txt && printf B > {outputs[0]}/sub/b.txt\"\noutputs = [{ url = \"s3://data/out\", recursive = true }]\n\n[[task]]\nname = \"use\"\ncommand = \"cd {inputs[0]} && find . -type f | sort | xargs cat > {outputs[0]}\"\ninputs = [{ task = \"make\", output = 0 }]\noutputs = [\"all.txt\"]\n\n[[task]]\nname = \"link\"\ncommand = \"ln -s /etc/passwd {outputs[0]}/leak\"\noutputs = [\"s3://data/bad/\"]\n",
    );
    let cfg = cfg.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", cfg, "run", "flow.toml", "--report", "-"];
        args.extend_from_slice(extra);
        sandbox.run_env(&args, &ENV)
    };
    // The dry run says where the task writes and that the consumer lists it later.
    let out = sandbox.run_env(&["--config", cfg, "run", "--dry-run", "flow.toml"], &ENV);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("/wd/out/ -> s3://data/out/ [a directory: each file the task writes below it, provider s3]")
            && out.stdout.contains("  in  s3://data/out/ -> ")
            && out.stdout.contains("[a directory another task writes: listed once it is staged out]"),
        "{}",
        out.stdout
    );
    let out = run(&[]);
    let report = out.json();
    let task = |name: &str| task_in(&report, name).clone();
    assert_eq!(task("make")["status"], "succeeded", "{}", out.stderr);
    assert_eq!(task("use")["status"], "succeeded", "{}", out.stderr);
    // Each file the task wrote is an object below the prefix, byte for byte.
    let listed = moto.boto(
        "for k in ['out/a.txt', 'out/sub/b.txt']: print(k, s3.get_object(Bucket='data', Key=k)['Body'].read().decode())\n",
    );
    assert_eq!(listed, "out/a.txt A\nout/sub/b.txt B\n");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("work/all.txt")).unwrap(),
        "AB"
    );
    // The directory's entry, then one per file, each naming its directory.
    let files = task("make")["files"].as_array().unwrap().clone();
    let urls: Vec<&str> = files.iter().map(|f| f["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        [
            "s3://data/out/",
            "s3://data/out/a.txt",
            "s3://data/out/sub/b.txt"
        ]
    );
    assert!(files[0]["local_path"]
        .as_str()
        .unwrap()
        .ends_with("/wd/out"));
    assert_eq!(files[1]["directory"], "s3://data/out/");
    assert_eq!(files[2]["bytes"], 1);
    // A link below a directory output is refused, naming it: its stage-out fails and
    // nothing of it goes up.
    assert_eq!(
        task("link")["status"],
        "stage-out-failed",
        "{}",
        task("link")
    );
    let error = task("link")["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("/wd/bad/leak is a link or a special file"),
        "{error}"
    );
    assert_eq!(
        moto.boto("print(s3.list_objects_v2(Bucket='data', Prefix='bad/').get('KeyCount'))\n"),
        "0\n"
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    // Nothing changed: the producer and its consumer are skipped.
    let out = run(&["--resume"]);
    assert_eq!(
        task_status(&out.json(), "make"),
        "skipped",
        "{}",
        out.stderr
    );
    assert_eq!(task_status(&out.json(), "use"), "skipped", "{}", out.stderr);
}

fn task_status(report: &serde_json::Value, name: &str) -> String {
    task_in(report, name)["status"].as_str().unwrap().to_owned()
}
