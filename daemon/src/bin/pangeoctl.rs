//! `pangeoctl`: the admin CLI. Speaks to pangeod's admin API over the unix socket, or over TLS
//! with a bearer token. Exit codes: 0 success, 1 API or connection error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyper::Method;
use pangeod::client::{self, Response, Transport};
use serde_json::Value;

const EXIT_API: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    version,
    about = "Administer the Pangeo appliance through pangeod's admin API"
)]
struct Args {
    /// The admin socket.
    #[arg(
        long,
        env = "PANGEOCTL_SOCKET",
        default_value = "/run/pangeod/admin.sock",
        global = true
    )]
    socket: PathBuf,
    /// Use the TCP listener instead, e.g. https://192.0.2.10:8443.
    #[arg(long, env = "PANGEOCTL_URL", global = true)]
    url: Option<String>,
    /// File with the bearer token (`name:token` or the bare token) for --url.
    #[arg(long, env = "PANGEOCTL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate to trust for --url (the appliance's local CA by default is tls/ca.pem in its state dir).
    #[arg(long, env = "PANGEOCTL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot steps, phase, hub URL and components.
    Status,
    /// Show or change the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// The event log, newest first.
    Events {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show events older than this id.
        #[arg(long)]
        before: Option<i64>,
    },
    /// Prometheus metrics, as served.
    Metrics,
    /// The local CA that signed the hub's certificate (PEM), for browsers to trust; a public
    /// domain has a Let's Encrypt certificate instead.
    TlsCa,
    /// A kubeconfig for the cluster (`pangeoctl kubeconfig > pangeo.kubeconfig`): a dedicated
    /// admin identity whose token expires.
    Kubeconfig {
        /// How long the token is valid, in hours (1 to 168).
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// Every user's home volume: owner, size, whether a server mounts it, whether the owner
    /// is still a member.
    Homes,
    /// One home volume.
    Home {
        #[command(subcommand)]
        action: HomeAction,
    },
    /// Users known from the directory.
    Users {
        /// active, disabled or removed
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Sync with FreeIPA now, or --confirm a held result.
    Sync {
        #[arg(long)]
        confirm: bool,
    },
    /// Grant or take back hub admin rights (kept locally).
    Admins {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Active members with their notebook server's state, as the hub reports it.
    Servers {
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Start or stop a member's notebook server (the home volume stays).
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
}

#[derive(Subcommand)]
enum ServerAction {
    Start { name: String },
    Stop { name: String },
}

#[derive(Subcommand)]
enum AdminAction {
    Add { name: String },
    Remove { name: String },
}

#[derive(Subcommand)]
enum HomeAction {
    /// Deletes the home volume of someone who is no longer a member, for good (refused for a
    /// member's home, or one a server mounts).
    Purge {
        /// The claim, as `pangeoctl homes` lists it.
        claim: String,
        /// The claim's name again.
        #[arg(long)]
        confirm: String,
    },
    /// Streams a copy of one home volume to standard output, a zstd-compressed tar, while the
    /// owner's server keeps running: `pangeoctl home export CLAIM > CLAIM.tar.zst`. Exits 1
    /// (the file then is incomplete) if the copy fails part-way.
    Export {
        /// The claim, as `pangeoctl homes` lists it.
        claim: String,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// The config in force.
    Get,
    /// Change updatable keys, e.g. `notebook.cpus=2 hub.admin_users='["admin","alice"]'`.
    /// Values are TOML (numbers, "strings", [arrays]); a bare word is a string. `KEY=@FILE`
    /// sends FILE's text and `KEY=@-` standard input's, as a string (for write-only values:
    /// `freeipa.password=@- freeipa.server=ipa.example.org` keeps the password out of `ps`
    /// and the shell's history).
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
    },
    /// Revert keys to the value in the config files.
    Unset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let transport = match transport(&args) {
        Ok(transport) => transport,
        Err(message) => return fail(EXIT_USAGE, &message),
    };
    if let Command::Home {
        action: HomeAction::Export { claim },
    } = &args.command
    {
        return export(&transport, claim);
    }
    let request = match request_for(&args.command) {
        Ok(request) => request,
        Err(message) => return fail(EXIT_USAGE, &message),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(EXIT_API, &format!("cannot start: {error}")),
    };
    let (method, path, body) = request;
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    let response = match runtime.block_on(client::call(
        &transport,
        method,
        &path,
        headers,
        body,
        Duration::from_secs(30),
    )) {
        Ok(response) => response,
        Err(error) => return fail(EXIT_API, &error.to_string()),
    };
    if !response.status.is_success() {
        return fail(EXIT_API, &problem_text(&response));
    }
    let sync_failed = matches!(args.command, Command::Sync { .. })
        && response
            .json()
            .is_ok_and(|j| j["run"]["outcome"] == "failed");
    if args.json {
        println!("{}", String::from_utf8_lossy(&response.body));
        return if sync_failed {
            ExitCode::from(EXIT_API)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = match &args.command {
        Command::Metrics | Command::TlsCa | Command::Kubeconfig { .. } => {
            String::from_utf8_lossy(&response.body).into_owned()
        }
        _ => match response.json() {
            Ok(json) => render(&args.command, &json),
            Err(error) => {
                return fail(
                    EXIT_API,
                    &format!("pangeod sent JSON that cannot be read: {error}"),
                );
            }
        },
    };
    print!("{}", printable(&text));
    if sync_failed {
        ExitCode::from(EXIT_API)
    } else {
        ExitCode::SUCCESS
    }
}

/// `pangeoctl home export CLAIM`: the body goes to standard output as it arrives.
fn export(transport: &Transport, claim: &str) -> ExitCode {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        return fail(
            EXIT_USAGE,
            &format!(
                "the export is binary (a zstd-compressed tar): redirect it to a file, for example pangeoctl home export {claim} > {claim}.tar.zst"
            ),
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(EXIT_API, &format!("cannot start: {error}")),
    };
    let path = format!("/v1/homes/{}/export", segment(claim));
    let mut stdout = tokio::io::stdout();
    let outcome = runtime.block_on(client::download(
        transport,
        &path,
        &mut stdout,
        Duration::from_secs(30),
        Duration::from_secs(300),
    ));
    match outcome {
        Ok(client::Download::Written(bytes)) => {
            eprintln!("pangeoctl: {claim}: {bytes} bytes written (a zstd-compressed tar)");
            ExitCode::SUCCESS
        }
        Ok(client::Download::Refused(response)) => fail(EXIT_API, &problem_text(&response)),
        Err(error) => fail(
            EXIT_API,
            &format!(
                "the export of {claim} did not complete, so what was written is not a whole copy: {error}"
            ),
        ),
    }
}

/// What pangeod sent, with control characters escaped but the line structure kept: a user
/// name or a message holding an ESC sequence must not repaint the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("pangeoctl: {}", printable(message));
    ExitCode::from(code)
}

fn transport(args: &Args) -> Result<Transport, String> {
    let Some(url) = &args.url else {
        return Transport::unix(&args.socket).map_err(|e| e.to_string());
    };
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("--url must start with https:// (got {url}); the TCP listener only speaks TLS")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("bad port in --url {url}"))?,
        ),
        None => (authority, 8443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or_default();
            Some(
                line.split_once(':')
                    .map_or(line, |(_, token)| token)
                    .trim()
                    .to_string(),
            )
        }
        None => None,
    };
    let ca = args
        .ca_file
        .as_ref()
        .ok_or("--url needs --ca-file: the CA that signed the appliance's certificate")?;
    Transport::tls(host, port, ca, token).map_err(|e| e.to_string())
}

fn request_for(command: &Command) -> Result<(Method, String, Option<Vec<u8>>), String> {
    Ok(match command {
        Command::Status => (Method::GET, "/v1/status".into(), None),
        Command::Metrics => (Method::GET, "/metrics".into(), None),
        Command::TlsCa => (Method::GET, "/v1/tls/ca.pem".into(), None),
        Command::Kubeconfig { hours } => {
            (Method::GET, format!("/v1/kubeconfig?hours={hours}"), None)
        }
        Command::Homes => (Method::GET, "/v1/homes".into(), None),
        Command::Home {
            action: HomeAction::Purge { claim, confirm },
        } => (
            Method::DELETE,
            format!("/v1/homes/{}?confirm={}", segment(claim), segment(confirm)),
            None,
        ),
        Command::Home {
            action: HomeAction::Export { claim },
        } => (
            Method::GET,
            format!("/v1/homes/{}/export", segment(claim)),
            None,
        ),
        Command::Users { state, limit } => {
            let mut path = format!("/v1/users?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={}", segment(state)));
            }
            (Method::GET, path, None)
        }
        Command::Sync { confirm: false } => (Method::POST, "/v1/sync".into(), None),
        Command::Sync { confirm: true } => (Method::POST, "/v1/sync/confirm".into(), None),
        Command::Admins {
            action: AdminAction::Add { name },
        } => (Method::PUT, format!("/v1/admins/{}", segment(name)), None),
        Command::Admins {
            action: AdminAction::Remove { name },
        } => (
            Method::DELETE,
            format!("/v1/admins/{}", segment(name)),
            None,
        ),
        Command::Servers { limit } => (
            Method::GET,
            format!("/v1/users?state=active&limit={limit}"),
            None,
        ),
        Command::Server {
            action: ServerAction::Start { name },
        } => (
            Method::POST,
            format!("/v1/users/{}/server", segment(name)),
            None,
        ),
        Command::Server {
            action: ServerAction::Stop { name },
        } => (
            Method::DELETE,
            format!("/v1/users/{}/server", segment(name)),
            None,
        ),
        Command::Events { limit, before } => {
            let mut path = format!("/v1/events?limit={limit}");
            if let Some(before) = before {
                path.push_str(&format!("&before={before}"));
            }
            (Method::GET, path, None)
        }
        Command::Config {
            action: ConfigAction::Get,
        } => (Method::GET, "/v1/config".into(), None),
        Command::Config {
            action: ConfigAction::Set { assignments },
        } => {
            let mut patch = serde_json::Map::new();
            for assignment in assignments {
                let (key, value) = assignment.split_once('=').ok_or_else(|| {
                    format!("\"{assignment}\" is not KEY=VALUE, e.g. notebook.cpus=2")
                })?;
                let value = match value.trim().strip_prefix('@') {
                    Some(source) => Value::String(read_value(source)?),
                    None => parse_value(value.trim()),
                };
                insert(&mut patch, key.trim(), value)?;
            }
            (
                Method::PATCH,
                "/v1/config".into(),
                Some(Value::Object(patch).to_string().into_bytes()),
            )
        }
        Command::Config {
            action: ConfigAction::Unset { keys },
        } => {
            let mut patch = serde_json::Map::new();
            for key in keys {
                insert(&mut patch, key.trim(), Value::Null)?;
            }
            (
                Method::PATCH,
                "/v1/config".into(),
                Some(Value::Object(patch).to_string().into_bytes()),
            )
        }
    })
}

fn insert(
    patch: &mut serde_json::Map<String, Value>,
    key: &str,
    value: Value,
) -> Result<(), String> {
    let (section, name) = key
        .split_once('.')
        .filter(|(s, n)| !s.is_empty() && !n.is_empty() && !n.contains('.'))
        .ok_or_else(|| format!("\"{key}\" is not a section.key name, e.g. notebook.cpus"))?;
    let entry = patch
        .entry(section.to_string())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(entries) = entry {
        entries.insert(name.to_string(), value);
    }
    Ok(())
}

/// TOML syntax for values (`2`, `"x"`, `["a"]`, `true`); anything else is a plain string.
/// `text` as one URL path segment: every byte outside RFC 3986's unreserved set is
/// percent-encoded, so a name cannot add a segment, a query or a fragment to the path.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text of `@FILE` or `@-` (standard input), without its trailing newline.
fn read_value(source: &str) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the value from standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(source)
            .map_err(|e| format!("cannot read the value from {source}: {e}"))?;
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn parse_value(text: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .and_then(|value| serde_json::to_value(value).ok())
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn problem_text(response: &Response) -> String {
    match response.json() {
        Ok(problem) => {
            let mut text = format!(
                "{} ({}): {}",
                problem["title"].as_str().unwrap_or("error"),
                response.status.as_u16(),
                problem["detail"].as_str().unwrap_or_default()
            );
            if let Some(field) = problem["field"].as_str() {
                text.push_str(&format!(" [field: {field}]"));
            }
            text
        }
        Err(_) => format!(
            "HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ),
    }
}

fn render(command: &Command, json: &Value) -> String {
    let mut out = String::new();
    match command {
        Command::Status => {
            out.push_str(&format!(
                "{}\n",
                json["summary"].as_str().unwrap_or_default()
            ));
            for reason in json["degraded_reasons"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "DEGRADED: {}\n",
                    reason.as_str().unwrap_or_default()
                ));
            }
            out.push_str(&format!(
                "version {}, up {}s, config revision {}\n",
                json["version"].as_str().unwrap_or("?"),
                json["uptime_seconds"],
                json["config_revision"]
            ));
            if let Some(url) = json["hub_url"].as_str() {
                out.push_str(&format!("hub: {url}\n"));
            }
            if let Some(error) = json["reload_error"].as_str() {
                out.push_str(&format!("last reload refused: {error}\n"));
            }
            out.push_str("steps:\n");
            for step in json["steps"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {:<16} {:<8} {}\n",
                    step["name"].as_str().unwrap_or_default(),
                    step["state"].as_str().unwrap_or_default(),
                    step["message"].as_str().unwrap_or_default()
                ));
            }
            let hub = &json["hub"];
            match (hub["last_error"].as_str(), hub["last_success_at"].as_str()) {
                (Some(error), _) => out.push_str(&format!("hub sync: {error}\n")),
                (None, Some(at)) => out.push_str(&format!(
                    "hub sync: {} {} at {at}\n",
                    hub["api_url"].as_str().unwrap_or_default(),
                    hub["version"].as_str().unwrap_or_default()
                )),
                (None, None) => {}
            }
            if let Some(listener) = json["api_listener"].as_object() {
                out.push_str(&format!(
                    "api listener: {} (TLS fingerprint {})\n",
                    listener["address"].as_str().unwrap_or_default(),
                    listener["tls_fingerprint"].as_str().unwrap_or_default()
                ));
            }
        }
        Command::Config { .. } => {
            out.push_str(&format!(
                "# revision {}{}\n",
                json["revision"],
                if json["changed"] == true {
                    " (changed)"
                } else {
                    ""
                }
            ));
            let overlay = &json["overlay"];
            for (section, entries) in json["config"].as_object().into_iter().flatten() {
                for (key, value) in entries.as_object().into_iter().flatten() {
                    let from_api = overlay[section].get(key).is_some();
                    out.push_str(&format!(
                        "{section}.{key} = {value}{}\n",
                        if from_api {
                            "   # set through the API"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        Command::Events { .. } => {
            for event in json["events"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:>6}  {}  {:<20} {:<24} {}\n",
                    event["id"],
                    event["at"].as_str().unwrap_or_default(),
                    event["actor"].as_str().unwrap_or_default(),
                    event["action"].as_str().unwrap_or_default(),
                    event["details"]
                ));
            }
            if let Some(next) = json["next_before"].as_i64() {
                out.push_str(&format!("(older: pangeoctl events --before {next})\n"));
            }
        }
        Command::Metrics | Command::TlsCa | Command::Kubeconfig { .. } => {}
        Command::Homes => {
            for home in json["homes"].as_array().into_iter().flatten() {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
                let mounted = home["mounted_by"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{:<28} {:<20} {:>8} {:<9} last used {:<24} {}\n",
                    text(&home["claim"]),
                    text(&home["user"]),
                    text(&home["capacity"]),
                    home["member"].as_str().unwrap_or("unknown"),
                    text(&home["last_activity"]),
                    if mounted.is_empty() {
                        String::new()
                    } else {
                        format!("mounted by {mounted}")
                    }
                ));
            }
        }
        Command::Home { .. } => {
            out.push_str(&format!(
                "{}: home volume deleted\n",
                json["user"].as_str().unwrap_or_default()
            ));
        }
        Command::Users { .. } => {
            for user in json["users"].as_array().into_iter().flatten() {
                let sources: Vec<&str> = user["admin_sources"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                // A flag set in the hub's admin page outranks the sources (kept while a member).
                let admin = match user["hub_grant"].as_bool() {
                    Some(true) if sources.is_empty() => "admin (granted in the hub)".to_string(),
                    Some(true) => format!("admin (granted in the hub; {})", sources.join(",")),
                    Some(false) if sources.is_empty() => String::new(),
                    Some(false) => format!("not admin (revoked in the hub; {})", sources.join(",")),
                    None if sources.is_empty() => String::new(),
                    None => format!("admin ({})", sources.join(",")),
                };
                out.push_str(&format!(
                    "{:<24} {:<9} {:<30} {}\n",
                    user["name"].as_str().unwrap_or_default(),
                    user["state"].as_str().unwrap_or_default(),
                    user["cn"].as_str().unwrap_or_default(),
                    admin
                ));
            }
        }
        Command::Sync { .. } if json["run"]["outcome"] == "failed" => {
            // Nothing was read or changed: the error, and nothing that looks like a result.
            out.push_str(&format!(
                "sync failed after {} ms, nothing changed: {}\n",
                json["run"]["duration_ms"],
                json["run"]["error"]
                    .as_str()
                    .unwrap_or("(no reason recorded)")
            ));
        }
        Command::Sync { .. } if json["run"]["outcome"] == "held" => {
            let run = &json["run"];
            out.push_str(&format!(
                "sync held: {} members, +{} disabled {} re-enabled {} applied; the removals are held, as the active users missing from the directory's answer are more than half: they keep their access (`pangeoctl status` counts them), and `pangeoctl sync --confirm` removes them if that is meant\n",
                run["members"], run["added"], run["disabled"], run["reenabled"]
            ));
        }
        Command::Sync { .. } => {
            let run = &json["run"];
            out.push_str(&format!(
                "sync {}: {} members, +{} -{} disabled {} re-enabled {} in {} ms\n",
                run["outcome"].as_str().unwrap_or_default(),
                run["members"],
                run["added"],
                run["removed"],
                run["disabled"],
                run["reenabled"],
                run["duration_ms"]
            ));
            if let Some(error) = run["error"].as_str() {
                out.push_str(&format!("error: {error}\n"));
            }
        }
        Command::Servers { .. } => {
            if let Some(error) = json["hub_error"].as_str() {
                out.push_str(&format!("the hub's view is missing: {error}\n"));
            }
            for user in json["users"].as_array().into_iter().flatten() {
                let hub = &user["hub"];
                out.push_str(&format!(
                    "{:<24} {:<9} {:<6} {}\n",
                    user["name"].as_str().unwrap_or_default(),
                    hub["server"].as_str().unwrap_or("-"),
                    if hub["admin"] == true { "admin" } else { "" },
                    hub["last_activity"].as_str().unwrap_or("-"),
                ));
            }
        }
        Command::Server { .. } => {
            out.push_str(&format!(
                "{}: {} (server {})\n",
                json["user"].as_str().unwrap_or_default(),
                json["outcome"].as_str().unwrap_or_default(),
                json["server"].as_str().unwrap_or_default()
            ));
        }
        Command::Admins { .. } => {
            out.push_str(&format!(
                "{}: {}\n",
                json["user"].as_str().unwrap_or_default(),
                if json["changed"] == true {
                    "changed"
                } else {
                    "already so"
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("alice"), "alice");
        assert_eq!(segment("Mixed.Case_9-~"), "Mixed.Case_9-~");
        assert_eq!(segment("../sync"), "..%2Fsync");
        assert_eq!(segment("a?b#c d"), "a%3Fb%23c%20d");
        assert_eq!(segment("j\u{f6}rg"), "j%C3%B6rg");
    }
}
