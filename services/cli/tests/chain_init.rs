//! `verity chain init` writes a chain the services load, the files its printed `kubectl`
//! commands name, and keeps an existing chain.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use verity_primitives::{ChainSpec, SigningKey};

fn init(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["chain", "init", "--out"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_new_chain_has_every_file_the_chart_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("chain");
    let output = init(&dir, &["--chain-id", "4242"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let spec = ChainSpec::load(&dir.join("genesis.json")).unwrap();
    assert_eq!(spec.chain_id(), 4242);
    let key =
        SigningKey::from_hex(&std::fs::read_to_string(dir.join("sequencer.key")).unwrap()).unwrap();
    assert_eq!(spec.sequencer, Some(key.address()));
    assert_eq!(
        std::fs::read_to_string(dir.join("sequencer.address")).unwrap(),
        key.address().to_string()
    );
    // One key per chart prover pool (default a and b), both registered.
    let pool = |name: &str| {
        SigningKey::from_hex(
            &std::fs::read_to_string(dir.join(format!("prover-{name}.key"))).unwrap(),
        )
        .unwrap()
        .address()
    };
    assert_eq!(
        std::fs::read_to_string(dir.join("prover.addresses")).unwrap(),
        format!("{},{}", pool("a"), pool("b"))
    );
    assert_ne!(pool("a"), pool("b"));
    assert!(stdout.contains("prover.pools must be [a, b]"), "{stdout}");
    let appointments: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("appointments.json")).unwrap())
            .unwrap();
    assert!(appointments.as_array().is_some_and(|a| !a.is_empty()));
    // No KZG parameters unless asked (they would be insecure).
    assert!(!dir.join("kzg.params").exists());

    // Every file the printed kubectl commands take exists.
    let files: Vec<&str> = stdout
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--from-file="))
        .map(|f| f.rsplit('=').next().unwrap_or(f))
        .collect();
    // The ConfigMap's and keys Secret's 10, the NATS authorization and one nkey for each of the
    // 9 components, and three for each of their TLS Secrets and the NATS server's; the bus-init
    // Job's nkey and CA.
    assert_eq!(files.len(), 10 + 1 + 9 + 10 * 3 + 2, "{stdout}");
    // The server's authorization admits each component's nkey, a prover's only to its own
    // results, and the admin to everything.
    let auth = std::fs::read_to_string(dir.join("nats/auth.conf")).unwrap();
    for component in ["sequencer", "gateway", "prover-a", "bus-init", "admin"] {
        let key = verity_bus::auth::read_nkey(&dir.join(format!("nats/{component}.nk"))).unwrap();
        assert!(
            auth.contains(&key.public),
            "{component} missing from:\n{auth}"
        );
    }
    let pool_a = verity_bus::message_id(pool("a").as_slice());
    assert!(
        auth.contains(&format!("verity.proofs.results.*.proof.{pool_a}")),
        "{auth}"
    );
    assert!(
        stdout.contains("secret generic verity-nats-prover-b "),
        "{stdout}"
    );
    // A pool pulls from and acknowledges only its own job consumer, the one the chart's prover
    // and bus-init Job name.
    assert!(
        auth.contains("$JS.ACK.VERITY_CHUNK_JOBS.verity-provers-a.>"),
        "{auth}"
    );
    assert!(
        !auth.contains("$JS.API.CONSUMER.CREATE.>"),
        "a component may make consumers anywhere:\n{auth}"
    );
    assert!(
        stdout.contains("secret generic verity-nats-bus-init ")
            && stdout.contains("secret generic verity-tls-bus-init "),
        "{stdout}"
    );
    // Each component's certificate names its role (what the chart's Secret of that name holds).
    for (component, role) in [
        ("sequencer", "sequencer"),
        ("gateway", "gateway"),
        ("replica-full", "replica"),
        ("replica-verifier", "verifier"),
        ("prover-b", "prover"),
    ] {
        let tls = verity_server::tls::TlsArgs::in_dir(&dir.join("tls"), component)
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(tls.role.name(), role, "{component}");
        assert!(
            stdout.contains(&format!("secret generic verity-tls-{component} ")),
            "{stdout}"
        );
    }
    // The bundled NATS server's certificate names the chart's NATS Services (release and
    // namespace `verity`).
    assert!(
        stdout.contains("secret generic verity-tls-nats "),
        "{stdout}"
    );
    let names = std::fs::read_to_string(dir.join("tls/nats.hosts")).unwrap();
    assert!(names.lines().any(|n| n == "verity-nats"), "{names}");
    assert!(
        names
            .lines()
            .any(|n| n == "*.verity-nats-headless.verity.svc"),
        "{names}"
    );
    for file in files {
        assert!(
            std::path::Path::new(file).is_file(),
            "{file} is named but missing:\n{stdout}"
        );
    }

    // Run again: the same chain (genesis and keys kept).
    let genesis = std::fs::read_to_string(dir.join("genesis.json")).unwrap();
    assert!(init(&dir, &["--chain-id", "7"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("genesis.json")).unwrap(),
        genesis
    );
}

#[test]
fn a_pool_name_the_chart_refuses_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = init(tmp.path(), &["--prover-pools", "a,Pool_B"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"Pool_B\" is not a pool name"));
    let output = init(tmp.path(), &["--prover-pools", "a,b,a"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("a pool is named twice"));
    let output = init(&tmp.path().join("one"), &["--prover-pools", "x"]);
    assert!(output.status.success());
    assert!(tmp.path().join("one/prover-x.key").is_file());
}

#[test]
fn chain_id_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = init(tmp.path(), &["--chain-id", "0"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--chain-id must not be 0"));
}
