//! The `proxy-checker` binary: parses the command line, loads the config, sets up logs,
//! and hands over to the library. Exit codes: 0 done, 2 bad usage or config, 3 no usable
//! source, 4 judge down, 1 anything else.

mod check;
mod judge;
mod logs;
mod progress;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "proxy-checker",
    version,
    about = "Turns public proxy lists into a small, trustworthy pool of working proxies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the proxies of some sources once and print the live ones.
    Check(Box<CheckArgs>),
    /// Run the service: rounds on a schedule, the REST API, persistence.
    Serve(serve::ServeArgs),
    /// Serve a judge of your own: the same echo as the service's `/judge`, plain or TLS.
    Judge(judge::JudgeArgs),
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The JSON config file.
        file: PathBuf,
    },
}

/// Options of `check`. Flags override the config file's values.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// JSON config file (same format as `serve`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A source: URL or file path, optionally prefixed by the protocol of its
    /// scheme-less lines (`socks5=lists/s5.txt`). Repeatable.
    #[arg(long = "source", short = 's', value_name = "[PROTOCOL=]URL_OR_PATH")]
    pub sources: Vec<String>,
    /// `connect-only` or `full-http`.
    #[arg(long)]
    pub mode: Option<String>,
    /// Judge URL fetched through each proxy. Repeatable; checks spread over healthy judges.
    #[arg(long = "judge-url", value_name = "URL")]
    pub judge_urls: Vec<String>,
    /// Require this text in the judge's answer instead of the nonce.
    #[arg(long, value_name = "TEXT")]
    pub expect_body: Option<String>,
    /// Whole-check timeout per probe, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// TCP connect timeout, in milliseconds.
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
    /// Checks in flight at most (clamped to the file-descriptor budget).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Extra attempts after a transient failure.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Allow loopback, private, CGNAT and link-local addresses, as proxies and as source
    /// URLs (tests, labs).
    #[arg(long)]
    pub allow_private: bool,
    /// A source listing more proxies than this fails (default 500000).
    #[arg(long, value_name = "N")]
    pub max_proxies_per_source: Option<usize>,
    /// Extra PEM roots for an HTTPS judge.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// File descriptors kept for everything but checks (default 5%, 64..=1024).
    #[arg(long)]
    pub fd_reserve: Option<u64>,
    /// Write the live proxies here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also write per-protocol lists into this directory (fastest first): `http.txt`
    /// (forwarding HTTP proxies), `https.txt` (CONNECT-capable), `socks4.txt`,
    /// `socks5.txt`, `all.txt` and `proxies.json`. Nothing goes to stdout unless `--output`
    /// is given too.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: proxy_checker::report::Format,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Log level on stderr (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, alias = "log", default_value = "warn", env = "PROXY_CHECKER_LOG")]
    pub log_level: String,
    /// Log format: `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub log_format: proxy_checker::config::LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match proxy_checker::config::Config::load(&file) {
            Ok(c) => {
                println!("{}: ok ({} sources; {})", file.display(), c.sources.len(), c.checker.summary());
                for w in c.warnings() {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", proxy_checker::Chain(&e));
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => serve::main(args),
        Command::Judge(args) => judge::main(args),
        Command::Check(args) => {
            logs::init(&args.log_level, "warn", args.log_format, logs::Stream::Stderr);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
            match runtime.block_on(check::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", proxy_checker::Chain(&e));
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}
