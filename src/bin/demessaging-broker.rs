//! Standalone embedded broker (no Python): `demessaging-broker [--host H] [--port P] [--token-file F]
//! [--max-frame-size N] [--max-connections N] [--tls-cert PEM --tls-key PEM]`. Stops cleanly on SIGINT/SIGTERM.
//! `DASF_BROKER_THREADS` sets the number of worker threads (default: half the cores).
//! The Python console script `demessaging-rs broker` runs the same broker inside the package.

use std::net::ToSocketAddrs;
use std::process::ExitCode;

use demessaging_rs::broker::{Broker, BrokerConfig};

const USAGE: &str = "usage: demessaging-broker [--host HOST] [--port PORT] [--token-file FILE] \
                     [--max-frame-size BYTES] [--max-connections N] [--tls-cert PEM --tls-key PEM]";

fn parse(args: &[String]) -> Result<(String, u16, BrokerConfig), String> {
    let mut host = "127.0.0.1".to_owned();
    let mut port = 8080u16;
    let mut cfg = BrokerConfig::default();
    let (mut cert, mut key) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-H" | "--host" => host = value()?,
            "-p" | "--port" => port = value()?.parse().map_err(|e| format!("invalid port: {e}"))?,
            "--max-frame-size" => cfg.max_frame_size = value()?.parse().map_err(|e| format!("invalid size: {e}"))?,
            "--max-connections" => cfg.max_connections = value()?.parse().map_err(|e| format!("invalid count: {e}"))?,
            "--token-file" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
                let tokens = demessaging_rs::broker::Tokens::parse(text.lines()).map_err(|e| format!("{path}: {e}"))?;
                cfg.tokens = Some(tokens);
            }
            "--tls-cert" => cert = Some(std::path::PathBuf::from(value()?)),
            "--tls-key" => key = Some(std::path::PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    cfg.tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(demessaging_rs::broker::tls_server_config(&cert, &key)?),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok((host, port, cfg))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, port, cfg) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let addr = match (host.as_str(), port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => {
            eprintln!("cannot resolve {host}:{port}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("broker")
        .build()
        .expect("runtime");
    let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
    rt.block_on(async move {
        let broker = match Broker::bind(addr, cfg).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let local = broker.local_addr().expect("bound");
        println!("demessaging-broker listening on {scheme}://{local}");
        let handle = broker.spawn().expect("spawn");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        handle.shutdown().await;
        println!("broker stopped");
        ExitCode::SUCCESS
    })
}
