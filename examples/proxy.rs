//! A caching reverse proxy: hitbox in standards mode (an RFC 9111 shared
//! cache) in front of one upstream.
//!
//! ```text
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//! cargo run --release --example proxy -- --help
//! ```
//!
//! This is only the `main`: the flags, their defaults, what the proxy
//! strips, sets and keys by, and why, are documented with the code in
//! `examples/src/proxy.rs` ([`hitbox_examples::proxy`]).
//!
//! `--config FILE` takes the cache layer from a configuration file instead
//! of the flags (`examples/config/proxy.toml`): its tiers and its
//! `[standards]` options; an invalid file is reported as
//! `FILE:LINE:COLUMN: ...` with exit status 1.

use std::process::ExitCode;

use hitbox_examples::proxy;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    // GET /metrics: the recorder goes in before any cache is built, so
    // that they register with it.
    let metrics = match hitbox_examples::metrics::install() {
        Ok(handle) => handle,
        Err(message) => {
            eprintln!("proxy: {message}");
            return ExitCode::FAILURE;
        }
    };
    // `--config FILE`: the cache layer (tiers, standards mode) from a file,
    // which must key what the flags make the proxy keep.
    let (args, path) = match hitbox_examples::config_arg::split_config_arg(std::env::args().skip(1)) {
        Ok(split) => split,
        Err(message) => {
            eprintln!("proxy: {message}");
            return ExitCode::FAILURE;
        }
    };
    let config = match proxy::command_line(args, &mut std::io::stdout(), &mut std::io::stderr()) {
        Ok(config) => config,
        Err(status) => return ExitCode::from(status),
    };
    let app = match path {
        Some(path) => {
            let check = |file: &hitbox_config::Config| proxy::fits_config(&config, file);
            match hitbox_examples::config_arg::build_checked(&path, check).await {
                Ok(built) => {
                    eprintln!("proxy: cache layer from {}", path.display());
                    proxy::app_with_layer(&config, built.layer)
                }
                Err(message) => {
                    eprintln!("proxy: {message}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => match proxy::cache(config.redis.as_deref()).await {
            Ok(cache) => proxy::app(&config, cache),
            Err(message) => {
                eprintln!("proxy: {message}");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("proxy: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("proxy: {} -> {}", config.listen, config.upstream);
    if let Err(error) = proxy::serve(listener, hitbox_examples::metrics::route(app, metrics)).await {
        eprintln!("proxy: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
