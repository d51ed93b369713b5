//! End-to-end Noise: parameters, keys, the handshake.

use std::path::Path;

use snow::{Builder, HandshakeState, StatelessTransportState};
use tracewire_context::to_hex;

use crate::RelayError;

/// The handshake pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// `IK`: the client knows (pins) the server's static key before connecting. Default.
    #[default]
    Ik,
    /// `XX`: keys are exchanged in the handshake; the client still checks the server's
    /// static key against the pinned one afterwards.
    Xx,
}

/// The cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Suite {
    /// `25519_AESGCM_SHA256` (default; fast with AES hardware, via ring).
    #[default]
    AesGcm,
    /// `25519_ChaChaPoly_BLAKE2s`, for machines without AES hardware.
    ChaChaPoly,
}

/// Noise settings; both ends must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoiseConfig {
    /// Handshake pattern.
    pub pattern: Pattern,
    /// Cipher suite.
    pub suite: Suite,
}

impl NoiseConfig {
    /// The Noise protocol name, e.g. `Noise_IK_25519_AESGCM_SHA256`.
    pub fn protocol_name(self) -> &'static str {
        match (self.pattern, self.suite) {
            (Pattern::Ik, Suite::AesGcm) => "Noise_IK_25519_AESGCM_SHA256",
            (Pattern::Xx, Suite::AesGcm) => "Noise_XX_25519_AESGCM_SHA256",
            (Pattern::Ik, Suite::ChaChaPoly) => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            (Pattern::Xx, Suite::ChaChaPoly) => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        }
    }

    fn builder(self) -> Result<Builder<'static>, RelayError> {
        let params = self.protocol_name().parse().map_err(|e: snow::Error| RelayError::Handshake(e.to_string()))?;
        Ok(Builder::new(params))
    }
}

/// The prologue both ends hash into the handshake: it binds the session id and the roles,
/// so a handshake cannot be replayed into another session or direction.
pub fn prologue(session_id: &str) -> Vec<u8> {
    let mut p = b"tracewire-relay/v1\0".to_vec();
    p.extend_from_slice(session_id.as_bytes());
    p.extend_from_slice(b"\0initiator=client\0responder=server");
    p
}

/// A static X25519 key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The private key.
    pub private: [u8; 32],
    /// The public key.
    pub public: [u8; 32],
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("Keypair").field("public", &to_hex(&self.public)).finish_non_exhaustive()
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Keypair {
    /// A fresh random key pair.
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate() -> Result<Self, RelayError> {
        let kp =
            NoiseConfig::default().builder()?.generate_keypair().map_err(|e| RelayError::Handshake(e.to_string()))?;
        let (Ok(private), Ok(public)) = (kp.private.as_slice().try_into(), kp.public.as_slice().try_into()) else {
            return Err(RelayError::Handshake("unexpected key length".into()));
        };
        Ok(Self { private, public })
    }

    /// Writes the private key (hex) to `path` with mode 0600, and the public key to
    /// `path.pub`.
    ///
    /// # Errors
    /// On I/O errors.
    pub fn write(&self, path: &Path) -> Result<(), RelayError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| RelayError::Key(format!("{}: {e}", path.display()));
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
        writeln!(f, "{}", to_hex(&self.private)).map_err(io)?;
        std::fs::write(public_path(path), format!("{}\n", to_hex(&self.public))).map_err(io)?;
        Ok(())
    }

    /// Reads a private key file written by [`Keypair::write`].
    ///
    /// # Errors
    /// When the file is missing or not a key.
    pub fn read(path: &Path) -> Result<Self, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|e| RelayError::Key(format!("{}: {e}", path.display())))?;
        let private =
            unhex32(&text).ok_or_else(|| RelayError::Key(format!("{}: not a private key", path.display())))?;
        let public = x25519_public(&private)?;
        Ok(Self { private, public })
    }
}

/// Where the public key of a private key file goes.
pub fn public_path(private: &Path) -> std::path::PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

/// Reads a public key file (64 hex digits).
///
/// # Errors
/// When the file is missing or not a key.
pub fn read_public_key(path: &Path) -> Result<[u8; 32], RelayError> {
    let text = std::fs::read_to_string(path).map_err(|e| RelayError::Key(format!("{}: {e}", path.display())))?;
    unhex32(&text).ok_or_else(|| RelayError::Key(format!("{}: not a public key", path.display())))
}

/// The X25519 public key of a private key (through snow's own DH implementation).
fn x25519_public(private: &[u8; 32]) -> Result<[u8; 32], RelayError> {
    let params: snow::params::NoiseParams =
        "Noise_N_25519_AESGCM_SHA256".parse().map_err(|e: snow::Error| RelayError::Key(e.to_string()))?;
    let resolver = snow::resolvers::DefaultResolver;
    let mut dh = snow::resolvers::CryptoResolver::resolve_dh(&resolver, &params.dh)
        .ok_or_else(|| RelayError::Key("no X25519 implementation".into()))?;
    dh.set(private);
    dh.pubkey().try_into().map_err(|_| RelayError::Key("unexpected key length".into()))
}

/// Frames of the handshake go through this: the relay transport implements it.
pub(crate) trait HandshakeIo {
    async fn send(&mut self, message: Vec<u8>) -> Result<(), RelayError>;
    async fn recv(&mut self) -> Result<Vec<u8>, RelayError>;
}

async fn run(mut hs: HandshakeState, io: &mut impl HandshakeIo) -> Result<HandshakeState, RelayError> {
    let mut buf = vec![0u8; 65535];
    while !hs.is_handshake_finished() {
        if hs.is_my_turn() {
            let n = hs.write_message(&[], &mut buf).map_err(|e| RelayError::Handshake(e.to_string()))?;
            io.send(buf[..n].to_vec()).await?;
        } else {
            let msg = io.recv().await?;
            hs.read_message(&msg, &mut buf)
                .map_err(|e| RelayError::Handshake(format!("handshake message rejected: {e}")))?;
        }
    }
    Ok(hs)
}

/// The client side: pins `server_public`. A server with another key fails the handshake.
pub(crate) async fn initiate(
    config: NoiseConfig,
    session_id: &str,
    server_public: &[u8; 32],
    io: &mut impl HandshakeIo,
) -> Result<StatelessTransportState, RelayError> {
    let ours = Keypair::generate()?;
    let prologue = prologue(session_id);
    let mut b = config.builder()?.local_private_key(&ours.private).and_then(|b| b.prologue(&prologue));
    if config.pattern == Pattern::Ik {
        b = b.and_then(|b| b.remote_public_key(server_public));
    }
    let hs = b.and_then(Builder::build_initiator).map_err(|e| RelayError::Handshake(e.to_string()))?;
    let hs = run(hs, io).await?;
    let remote: Option<[u8; 32]> = hs.get_remote_static().and_then(|k| k.try_into().ok());
    if remote.as_ref() != Some(server_public) {
        return Err(RelayError::WrongKey);
    }
    hs.into_stateless_transport_mode().map_err(|e| RelayError::Handshake(e.to_string()))
}

/// The server side, with its static key.
pub(crate) async fn respond(
    config: NoiseConfig,
    session_id: &str,
    keypair: &Keypair,
    io: &mut impl HandshakeIo,
) -> Result<StatelessTransportState, RelayError> {
    let prologue = prologue(session_id);
    let hs = config
        .builder()?
        .local_private_key(&keypair.private)
        .and_then(|b| b.prologue(&prologue))
        .and_then(Builder::build_responder)
        .map_err(|e| RelayError::Handshake(e.to_string()))?;
    let hs = run(hs, io).await?;
    hs.into_stateless_transport_mode().map_err(|e| RelayError::Handshake(e.to_string()))
}
