//! The `presence` binary: parse the command line, then serve or mint a token.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use presence::auth::{DemoKeys, KeySource, mint};
use presence::clock::{Clock, SystemClock};
use presence::config::{Cli, Command, Config, ConfigError, ServeArgs, TokenArgs, one_line};
use presence::store::TimeSource;
use presence::{AppState, telemetry};

/// mimalloc: faster than the system allocator on the request path, and it
/// returns freed pages to the system, so RSS follows the sessions held.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Variables already in the environment win over `.env`; a missing
    // `.env` is the normal case.
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match one_line(&e) {
            Some(line) => return config_failure(&line),
            None => e.exit(),
        },
    };
    match cli.command {
        Some(Command::Token(args)) => token(&args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn config_failure(line: &str) -> ExitCode {
    eprintln!("presence: configuration error: {line}");
    ExitCode::from(2)
}

fn token(args: &TokenArgs) -> ExitCode {
    let keys = match KeySource::load(&args.jwt) {
        Ok(KeySource::Demo(_)) => {
            return config_failure(
                "JWT_SECRET: not set; a demo-mode server signs with a random key of its own, \
                 so use the token it prints at start-up, or set JWT_SECRET for both",
            );
        }
        Ok(keys) => keys,
        Err(e) => return config_failure(&e.to_string()),
    };
    match mint(
        &keys,
        &args.jwt,
        &args.user,
        args.role.as_deref(),
        args.name.as_deref(),
        args.ttl,
        SystemClock.now_ms(),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => config_failure(&e.to_string()),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => return config_failure(&e.to_string()),
    };
    telemetry::init(config.args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("presence: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(mut config: Config) -> ExitCode {
    config.args.max_connections =
        match presence::http::server::fit_to_file_limit(config.args.max_connections) {
            Ok(cap) => cap,
            Err(e) => return config_failure(&e.to_string()),
        };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let args = &config.args;
    let state = match AppState::build(&config, clock.clone(), TimeSource::Redis) {
        Ok(state) => state,
        Err(e) => return config_failure(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            return config_failure(
                &ConfigError {
                    variable: "LISTEN_ADDR",
                    message: format!("cannot listen on {}: {e}", args.listen_addr),
                }
                .to_string(),
            );
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen_addr);
    tracing::info!(%addr, store = state.store.kind(), "presence listening");
    if let (presence::store::Store::Redis(redis), Some(topology)) = (&state.store, &config.redis) {
        tokio::spawn(report_redis(
            redis.clone(),
            topology.for_logs(),
            args.redis_key_prefix.clone(),
        ));
    }
    if state.demo.is_none() && args.jwt.jwt_audience.is_none() {
        tracing::warn!(
            "JWT_AUDIENCE is not set, so any token signed with this key logs in, whatever it \
             was minted for; set it to the `aud` the product's backend puts in presence tokens"
        );
    }
    if let Some(demo) = &state.demo {
        print_demo_banner(demo, addr, clock.now_ms());
    }
    let router = presence::app(state.clone(), &args.cors_allowed_origins);
    presence::serve(
        listener,
        router,
        state,
        config.sweep_interval,
        presence::shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Says which Redis this instance uses (`url` without its password) and
/// whether it answers, and when it does, whether it may evict keys and
/// whether it holds as many shards as `REDIS_SHARDS` says (exiting with
/// status 2 when not). In the background: the service starts either way,
/// and serves heartbeats once Redis answers (the store itself refuses every
/// call until the shard count is checked).
async fn report_redis(redis: presence::store::RedisStore, url: String, prefix: String) {
    use presence::store::SessionStore as _;
    let shards = redis.shard_count();
    match tokio::time::timeout(std::time::Duration::from_secs(2), redis.ping()).await {
        Ok(Ok(())) => {
            tracing::info!(%url, %prefix, shards, "using Redis; it answered");
        }
        Ok(Err(e)) => {
            tracing::warn!(%url, %prefix, error = %e, "using Redis, which does not answer yet; requests get 503 until it does")
        }
        Err(_) => {
            tracing::warn!(%url, %prefix, "using Redis, which did not answer within 2 s; requests get 503 until it does")
        }
    }
    let recorded = loop {
        match redis.recorded_shards().await {
            Ok(recorded) => break recorded,
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    };
    if usize::from(recorded) != shards {
        let line = format!("REDIS_SHARDS: {}", redis.shard_mismatch(recorded));
        tracing::error!("{line}");
        let _exit: ExitCode = config_failure(&line);
        std::process::exit(2);
    }
    redis.check_eviction_policy().await;
}

/// Demo mode: warn, and print a token and a curl line that work as printed.
fn print_demo_banner(demo: &DemoKeys, addr: std::net::SocketAddr, now_ms: i64) {
    tracing::warn!(
        "demo mode: no JWT_SECRET or JWT_PUBLIC_KEY_FILE is set, so tokens are signed with a \
         random key that changes at every start; do not use this in production"
    );
    let ttl = std::time::Duration::from_secs(24 * 3600);
    let Ok(token) = mint(
        &demo.keys,
        &demo.jwt,
        "demo",
        Some("admin"),
        Some("Demo Admin"),
        ttl,
        now_ms,
    ) else {
        return;
    };
    println!("Demo token (user \"demo\", name \"Demo Admin\", role admin, valid 24h):");
    println!("  {token}");
    println!("Try:");
    println!(
        "  curl -s -w '\\n' -X POST http://{addr}/api/stats/heartbeat -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"module\":\"pms\",\"resource\":\"request:1\"}}'"
    );
    println!(
        "  curl -s -w '\\n' http://{addr}/api/stats/modules -H 'Authorization: Bearer {token}'"
    );
    println!(
        "  curl -s -w '\\n' http://{addr}/api/presence/resources/request:1 -H 'Authorization: Bearer {token}'"
    );
    println!(
        "  curl -s -w '\\n' -X POST http://{addr}/api/presence/users -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"userIds\":[\"demo\"]}}'"
    );
    println!(
        "  curl -sN --max-time 2 'http://{addr}/api/presence/stream?resources=request%3A1,request%3A2' -H 'Authorization: Bearer {token}'"
    );
    println!("Demo page (open it in two windows, as two users): http://{addr}/demo/");
    println!("Admin dashboard (paste the token above): http://{addr}/admin");
}
