//! TLS setup: rustls with the ring provider (small, builds everywhere, musl included).

/// Installs ring as the process-wide rustls provider; later calls are no-ops.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: either way a provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
