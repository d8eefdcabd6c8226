//! A two-task pipeline through the library API, on the config stagehost finds (the
//! embedded default when there is none): `write` runs a shell command that produces a
//! file; `shout` is a Rust closure that takes that output as its input (a data
//! dependency, so it waits for `write`'s stage-out) and writes an upper-cased copy.
//!
//! Run: `cargo build --workspace && STAGEHOST_PLUGIN_PATH=target/debug cargo run -p stagehost --example two_tasks`

use stagehost::engine::{Engine, EngineOptions, TaskSpec, TaskStatus};
use stagehost::{Config, File, PluginLoader, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("stagehost-two-tasks-{}", std::process::id()));
    let config = Config::locate(None)?;
    let registry = Registry::build(&config, &PluginLoader::default())?;
    let engine = Engine::new(&registry, EngineOptions::default())?;

    let raw = File::parse(&dir.join("raw.txt").to_string_lossy())?;
    let loud = File::parse(&dir.join("loud.txt").to_string_lossy())?;
    let write = engine
        .submit(TaskSpec::command("write", "echo hello stagehost > {outputs[0]}").output(raw))?;
    let shout = engine.submit(
        TaskSpec::closure("shout", |files| {
            let text = std::fs::read_to_string(&files.inputs[0]).map_err(|e| e.to_string())?;
            std::fs::write(&files.outputs[0], text.to_uppercase()).map_err(|e| e.to_string())
        })
        .input(write.output(0).expect("`write` has one output"))
        .output(loud.clone()),
    )?;

    for report in engine.wait_all().await {
        println!("{}: {:?}", report.name, report.status);
    }
    let result = std::fs::read_to_string(loud.filepath()?)?;
    println!("{}", result.trim());
    std::fs::remove_dir_all(&dir)?;
    if shout.wait().await.status != TaskStatus::Succeeded {
        return Err("the pipeline failed".into());
    }
    Ok(())
}
