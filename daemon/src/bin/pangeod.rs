//! `pangeod`: the appliance daemon. See docs/ARCHITECTURE.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pangeod::config::{Config, DEFAULT_CONFIG_PATH};
use pangeod::daemon::{self, DaemonError, EXIT_CANNOT_START};

#[derive(Parser)]
#[command(version, about = "Turns this VM into a multi-user Pangeo platform")]
struct Args {
    /// The main config file; drop-ins are read from `<stem>.d/*.toml` beside it.
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH, env = "PANGEOD_CONFIG")]
    config: PathBuf,
    /// Validate the config files and exit: 0 if valid, 1 with the errors otherwise.
    #[arg(long)]
    check: bool,
    /// Print the admin API's OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
    /// Print the configuration reference (README.md's table of settings, from
    /// `config/settings.rs`) and exit.
    #[arg(long)]
    print_settings_table: bool,
    /// Print the hub's config for this config as a jupyterhub_config.py (the chart's
    /// hub.config, for a hub outside Kubernetes such as the test fixture) and exit.
    #[arg(long)]
    print_hub_config: bool,
    /// Print the chart HelmCharts (JSON, with each chart's valuesContent) pangeod renders for
    /// this config, with placeholder secrets, and exit.
    #[arg(long)]
    print_helmcharts: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        return match pangeod::api::openapi().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("pangeod: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if args.print_settings_table {
        print!("{}", pangeod::config::settings::reference_table());
        return ExitCode::SUCCESS;
    }
    if args.print_hub_config {
        return match Config::load(&args.config, None) {
            Ok(config) => {
                print!("{}", pangeod::components::values::hub_config_py(&config));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    if args.print_helmcharts {
        return match Config::load(&args.config, None) {
            Ok(config) => match pangeod::components::print_helm_charts(&config) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("pangeod: {error}");
                    ExitCode::FAILURE
                }
            },
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    if args.check {
        return match Config::load(&args.config, None) {
            Ok(config) => {
                println!(
                    "{}: valid; hub URL {}",
                    args.config.display(),
                    config.hub_url()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        };
    }
    pangeod::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pangeod: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pangeod: {error}");
            match error {
                DaemonError::State(_) | DaemonError::Listen(_) => ExitCode::from(EXIT_CANNOT_START),
                DaemonError::Signal(..) => ExitCode::FAILURE,
            }
        }
    }
}
