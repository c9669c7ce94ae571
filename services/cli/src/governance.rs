//! `verity governance`: appointing a sequencer with m of the n governance keys genesis names.
//!
//! The steps, each by whoever holds what it needs:
//! 1. `keygen`: a key file (governance key holders, and the new sequencer).
//! 2. `draft`: the appointment, from the chain as a replica sees it (the epoch in force + 1, the
//!    block being built, its parent's hash) or from flags; written as JSON.
//! 3. `sign`: each governance key holder adds a signature to the file, with their own key file.
//! 4. `publish`: checks the appointment against genesis and the chain (m signatures of
//!    governance keys, an epoch above the one in force, the right parent) and puts it into the
//!    `VERITY_APPOINTMENTS` bucket, where the appointed sequencer picks it up. Every refusal
//!    says why; nothing is published then.

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256};
use anyhow::Context as _;
use verity_primitives::{
    ChainSpec, SigningKey,
    governance::{Appointment, SignedAppointment},
};
use verity_proto::v1;

#[derive(clap::Args, Debug)]
pub struct GovernanceArgs {
    #[command(subcommand)]
    command: GovernanceCommand,
}

#[derive(clap::Subcommand, Debug)]
enum GovernanceCommand {
    /// Create a key file (hex secp256k1 private key) and print its address.
    Keygen {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Draft an appointment of `--sequencer` from the chain's current position (as the replica
    /// at `--replica-url` sees it) or from explicit flags.
    Draft(DraftArgs),
    /// Add this governance key's signature to an appointment file.
    Sign {
        /// The appointment file (updated in place).
        #[arg(long)]
        appointment: PathBuf,
        /// This governance member's key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check an appointment against genesis and the chain, then publish it to the appointed
    /// sequencer.
    Publish {
        /// The signed appointment file.
        #[arg(long)]
        appointment: PathBuf,
        /// The chain's genesis (its governance keys and threshold).
        #[arg(long)]
        genesis: PathBuf,
        /// A replica of the chain (the epoch in force and the block being built).
        #[arg(long, default_value = "http://127.0.0.1:7300")]
        replica_url: String,
        /// The certificate to call the replica with (an admin's, over mutual TLS).
        #[command(flatten)]
        tls: verity_server::tls::TlsArgs,
        /// NATS server of the chain, and the credential to publish with.
        #[command(flatten)]
        nats: verity_bus::NatsArgs,
    },
}

#[derive(clap::Args, Debug)]
struct DraftArgs {
    /// The appointed sequencer's address.
    #[arg(long)]
    sequencer: Address,
    /// The chain's genesis (its chain id).
    #[arg(long)]
    genesis: PathBuf,
    /// A replica to read the chain's position from (epoch, block being built, parent hash).
    #[arg(long, default_value = "http://127.0.0.1:7300")]
    replica_url: String,
    /// The certificate to call the replica with (an admin's, over mutual TLS).
    #[command(flatten)]
    tls: verity_server::tls::TlsArgs,
    /// Epoch to open (default: the epoch in force + 1).
    #[arg(long)]
    epoch: Option<u64>,
    /// First block the sequencer signs (default: the block being built).
    #[arg(long)]
    first_height: Option<u64>,
    /// Hash of block first-height - 1 (default: the replica's newest block).
    #[arg(long)]
    parent_hash: Option<B256>,
    /// Draft a standing appointment (a hot standby's: first height 0, any parent).
    #[arg(long, conflicts_with_all = ["first_height", "parent_hash"])]
    standing: bool,
    /// Where to write the draft (never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// The chain's position as a replica reports it.
struct Position {
    epoch: u64,
    open_block: u64,
    parent_hash: B256,
}

async fn position(
    replica_url: &str,
    tls: &verity_server::tls::TlsArgs,
) -> anyhow::Result<Position> {
    let tls = tls.load()?;
    let endpoint =
        verity_server::tls::endpoint(replica_url, tls.as_ref(), verity_server::tls::Role::Replica)
            .map_err(|e| anyhow::anyhow!("--replica-url: {e}"))?;
    let mut client = v1::replica_client::ReplicaClient::new(
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the replica at --replica-url {replica_url}"))?,
    );
    let head = client
        .get_head(v1::GetHeadRequest {})
        .await
        .with_context(|| format!("replica at {replica_url}: GetHead"))?
        .into_inner();
    Ok(Position {
        epoch: head.epoch,
        open_block: head.block_number + 1,
        parent_hash: B256::try_from(head.block_hash.as_slice())
            .context("the replica reported a malformed block hash")?,
    })
}

fn read_appointment(path: &Path) -> anyhow::Result<SignedAppointment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a signed appointment (JSON)", path.display()))
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn say(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

pub async fn run(args: GovernanceArgs) -> anyhow::Result<()> {
    match args.command {
        GovernanceCommand::Keygen { out } => {
            let key = SigningKey::random();
            write_new(&out, &key.to_hex())?;
            say(&format!("{}", key.address()))
        }
        GovernanceCommand::Draft(args) => {
            let spec = ChainSpec::load(&args.genesis).context("flag --genesis")?;
            let needs_chain = args.epoch.is_none()
                || (!args.standing && (args.first_height.is_none() || args.parent_hash.is_none()));
            let at = if needs_chain {
                Some(position(&args.replica_url, &args.tls).await?)
            } else {
                None
            };
            let (first_height, parent_hash) = if args.standing {
                (0, B256::ZERO)
            } else {
                (
                    args.first_height
                        .or(at.as_ref().map(|p| p.open_block))
                        .unwrap_or_default(),
                    args.parent_hash
                        .or(at.as_ref().map(|p| p.parent_hash))
                        .unwrap_or_default(),
                )
            };
            let appointment = Appointment {
                chain_id: spec.chain_id(),
                epoch: args.epoch.or(at.as_ref().map(|p| p.epoch + 1)).unwrap_or(1),
                sequencer: args.sequencer,
                first_height,
                parent_hash,
            };
            let draft = SignedAppointment {
                appointment,
                signatures: Vec::new(),
            };
            write_new(&args.out, &serde_json::to_string_pretty(&draft)?)?;
            say(&serde_json::to_string_pretty(&draft.appointment)?)
        }
        GovernanceCommand::Sign { appointment, key } => {
            let mut signed = read_appointment(&appointment)?;
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read --key {}", key.display()))?;
            let key = SigningKey::from_hex(&text)
                .with_context(|| format!("--key {} is not a hex private key", key.display()))?;
            let signature = signed.appointment.sign(&key);
            if !signed.signatures.contains(&signature) {
                signed.signatures.push(signature);
            }
            std::fs::write(&appointment, serde_json::to_string_pretty(&signed)?)
                .with_context(|| format!("cannot write {}", appointment.display()))?;
            say(&format!(
                "signed by {} ({} signature(s) now)",
                key.address(),
                signed.signatures.len()
            ))
        }
        GovernanceCommand::Publish {
            appointment,
            genesis,
            replica_url,
            tls,
            nats,
        } => {
            let signed = read_appointment(&appointment)?;
            let spec = ChainSpec::load(&genesis).context("flag --genesis")?;
            let governance = spec.governance.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "this chain's genesis sets no governance (config.verity.governance): nothing can appoint a sequencer"
                )
            })?;
            let at = position(&replica_url, &tls).await?;
            governance
                .verify(
                    &signed,
                    spec.chain_id(),
                    at.epoch,
                    at.open_block,
                    at.parent_hash,
                )
                .map_err(|e| anyhow::anyhow!("appointment refused: {e}"))?;
            let (_client, js) = nats.connect("verity-governance").await?;
            let store = verity_bus::lease::appointments_store(&js).await?;
            match verity_bus::lease::publish_appointment(&store, &signed).await {
                Ok(_) => say(&format!(
                    "published: epoch {} for {} from block {}",
                    signed.appointment.epoch,
                    signed.appointment.sequencer,
                    if signed.appointment.is_standing() {
                        "wherever it takes over".to_string()
                    } else {
                        signed.appointment.first_height.to_string()
                    }
                )),
                Err(verity_bus::lease::LeaseError::Lost { .. }) => anyhow::bail!(
                    "appointment refused: epoch {} was published already",
                    signed.appointment.epoch
                ),
                Err(error) => Err(error.into()),
            }
        }
    }
}
