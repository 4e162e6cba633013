//! The HTTP form of the control API: one route per [`Request`], both
//! ways. The client builds routes with [`to_route`]; the daemon's server
//! turns what arrives back into an [`Envelope`] with [`from_route`]. A
//! `host=NAME` query parameter on any route carries the envelope's host.
//!
//! Bodies are JSON; answers are the reply's data as JSON (not tagged),
//! except logs (raw bytes) and events (one JSON event per line).

use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::request::{Envelope, Request, Response, VERSION};

/// The path prefix of this API version.
pub const PREFIX: &str = "/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request as HTTP: method, path with query, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

/// The body of a `scale`: the count, or `null` for the file's.
#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleTo {
    replicas: Option<u32>,
}

#[derive(serde::Serialize, Deserialize, Default)]
struct WithDependents {
    #[serde(default)]
    with_dependents: bool,
}

#[derive(serde::Serialize, Deserialize)]
struct ConfigText {
    file_name: String,
    config_text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

/// The body of a `plan_fleet`.
#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
struct PlanFleetBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<crate::request::ConfigFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
}

/// The body of a `config_diff`.
#[derive(serde::Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigDiffBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<crate::request::ConfigFile>,
}

#[derive(serde::Serialize, Deserialize)]
struct MigBody {
    enable: bool,
}

fn json<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    // These bodies are plain structs of strings and bools: serialising
    // them cannot fail.
    Some(serde_json::to_vec(v).unwrap_or_default())
}

/// The route of a request.
pub fn to_route(env: &Envelope) -> Route {
    let mut query: Vec<String> = Vec::new();
    let (method, path, body) = match &env.request {
        Request::Status => (Method::Get, "status".to_string(), None),
        Request::Groups => (Method::Get, "groups".into(), None),
        Request::Agents { group } => {
            if let Some(g) = group {
                query.push(format!("group={g}"));
            }
            (Method::Get, "agents".into(), None)
        }
        Request::GroupStart { group } => (Method::Post, format!("groups/{group}/start"), None),
        Request::GroupStop {
            group,
            with_dependents,
        } => (
            Method::Post,
            format!("groups/{group}/stop"),
            json(&WithDependents {
                with_dependents: *with_dependents,
            }),
        ),
        Request::GroupRestart {
            group,
            with_dependents,
        } => (
            Method::Post,
            format!("groups/{group}/restart"),
            json(&WithDependents {
                with_dependents: *with_dependents,
            }),
        ),
        Request::AgentRestart { group, agent } => (
            Method::Post,
            format!("agents/{group}/{agent}/restart"),
            None,
        ),
        Request::Scale {
            group,
            agent,
            replicas,
        } => (
            Method::Post,
            format!("agents/{group}/{agent}/scale"),
            json(&ScaleTo {
                replicas: *replicas,
            }),
        ),
        Request::Logs {
            group,
            agent,
            replica,
            follow,
            tail,
            since,
            timestamps,
            json,
        } => {
            query.push(format!("replica={replica}"));
            if *follow {
                query.push("follow=1".into());
            }
            if let Some(t) = tail {
                query.push(format!("tail={t}"));
            }
            if let Some(s) = since {
                query.push(format!("since={s}"));
            }
            if *timestamps {
                query.push("timestamps=1".into());
            }
            if *json {
                query.push("json=1".into());
            }
            (Method::Get, format!("agents/{group}/{agent}/logs"), None)
        }
        Request::Events { since, follow } => {
            query.push(format!("since={since}"));
            if *follow {
                query.push("follow=1".into());
            }
            (Method::Get, "events".into(), None)
        }
        Request::Apply {
            file_name,
            config_text,
            force,
        } => (
            Method::Post,
            "apply".into(),
            json(&ConfigText {
                file_name: file_name.clone(),
                config_text: config_text.clone(),
                force: *force,
            }),
        ),
        Request::Reload => (Method::Post, "reload".into(), None),
        Request::Gpu => (Method::Get, "gpu".into(), None),
        Request::Plan {
            file_name,
            config_text,
        } => (
            Method::Post,
            "plan".into(),
            json(&ConfigText {
                file_name: file_name.clone(),
                config_text: config_text.clone(),
                force: false,
            }),
        ),
        Request::PlanFleet { config, agent } => (
            Method::Post,
            "plan/fleet".into(),
            json(&PlanFleetBody {
                config: config.clone(),
                agent: agent.clone(),
            }),
        ),
        Request::ConfigDiff { config } => (
            Method::Post,
            "config/diff".into(),
            json(&ConfigDiffBody {
                config: config.clone(),
            }),
        ),
        Request::MigMode { gpu, enable } => (
            Method::Post,
            format!("gpu/{gpu}/mig"),
            json(&MigBody { enable: *enable }),
        ),
        Request::Peers => (Method::Get, "peers".into(), None),
        Request::Fleet => (Method::Get, "fleet".into(), None),
        Request::Slo { group } => {
            if let Some(g) = group {
                query.push(format!("group={g}"));
            }
            (Method::Get, "slo".into(), None)
        }
        Request::StateExport => (Method::Get, "state".into(), None),
        Request::Rollout { action } => {
            use crate::rollout::RolloutAction as A;
            match action {
                A::Status => (Method::Get, "rollout".into(), None),
                A::Pause => (Method::Post, "rollout/pause".into(), None),
                A::Resume => (Method::Post, "rollout/resume".into(), None),
                A::Undo { to } => {
                    if let Some(to) = to {
                        query.push(format!("to={to}"));
                    }
                    (Method::Post, "rollout/undo".into(), None)
                }
            }
        }
        Request::StateImport { state } => (Method::Post, "state".into(), json(state)),
        Request::History => (Method::Get, "history".into(), None),
    };
    if let Some(h) = &env.host {
        query.push(format!("host={h}"));
    }
    let mut path = format!("{PREFIX}/{path}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    Route { method, path, body }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query_value(query, key).is_some_and(|v| v.is_empty() || v == "1" || v == "true")
}

fn query_num<T: std::str::FromStr>(query: Option<&str>, key: &str) -> Result<Option<T>, ApiError> {
    match query_value(query, key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("`{key}={v}` is not a number"))),
    }
}

fn body_as<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad `{what}` body: {e}")))
}

fn body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body_as(body, what)
    }
}

/// The envelope a route stands for, or why it stands for none.
pub fn from_route(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Envelope, ApiError> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no such API path {path}; this daemon speaks {PREFIX}"),
        ));
    };
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == "GET";
    let post = method == "POST";
    let request = match parts.as_slice() {
        ["status"] if get => Request::Status,
        ["groups"] if get => Request::Groups,
        ["agents"] if get => Request::Agents {
            group: query_value(query, "group").map(str::to_string),
        },
        ["groups", group, verb] if post => {
            let group = group.to_string();
            match *verb {
                "start" => Request::GroupStart { group },
                "stop" => Request::GroupStop {
                    group,
                    with_dependents: body_or_default::<WithDependents>(body, "stop")?
                        .with_dependents,
                },
                "restart" => Request::GroupRestart {
                    group,
                    with_dependents: body_or_default::<WithDependents>(body, "restart")?
                        .with_dependents,
                },
                other => {
                    return Err(bad(format!(
                        "unknown group action `{other}`; use start, stop or restart"
                    )));
                }
            }
        }
        ["agents", group, agent, "restart"] if post => Request::AgentRestart {
            group: group.to_string(),
            agent: agent.to_string(),
        },
        ["agents", group, agent, "scale"] if post => Request::Scale {
            group: group.to_string(),
            agent: agent.to_string(),
            replicas: body_as::<ScaleTo>(body, "scale")?.replicas,
        },
        ["agents", group, agent, "logs"] if get => Request::Logs {
            group: group.to_string(),
            agent: agent.to_string(),
            replica: query_num(query, "replica")?.unwrap_or(0),
            follow: query_flag(query, "follow"),
            tail: query_num(query, "tail")?,
            since: query_num(query, "since")?,
            timestamps: query_flag(query, "timestamps"),
            json: query_flag(query, "json"),
        },
        ["events"] if get => Request::Events {
            since: query_num(query, "since")?.unwrap_or(0),
            follow: query_flag(query, "follow"),
        },
        ["apply"] if post => {
            let b: ConfigText = body_as(body, "apply")?;
            Request::Apply {
                file_name: b.file_name,
                config_text: b.config_text,
                force: b.force,
            }
        }
        ["reload"] if post => Request::Reload,
        ["gpu"] if get => Request::Gpu,
        ["peers"] if get => Request::Peers,
        ["fleet"] if get => Request::Fleet,
        ["history"] if get => Request::History,
        ["slo"] if get => Request::Slo {
            group: query_value(query, "group")
                .filter(|g| !g.is_empty())
                .map(str::to_string),
        },
        ["plan"] if post => {
            let b: ConfigText = body_as(body, "plan")?;
            Request::Plan {
                file_name: b.file_name,
                config_text: b.config_text,
            }
        }
        ["plan", "fleet"] if post => {
            let b: PlanFleetBody = body_or_default(body, "plan fleet")?;
            Request::PlanFleet {
                config: b.config,
                agent: b.agent,
            }
        }
        ["config", "diff"] if post => {
            let b: ConfigDiffBody = body_or_default(body, "config diff")?;
            Request::ConfigDiff { config: b.config }
        }
        ["state"] if get => Request::StateExport,
        ["rollout"] if get => Request::Rollout {
            action: crate::rollout::RolloutAction::Status,
        },
        ["rollout", "pause"] if post => Request::Rollout {
            action: crate::rollout::RolloutAction::Pause,
        },
        ["rollout", "resume"] if post => Request::Rollout {
            action: crate::rollout::RolloutAction::Resume,
        },
        ["rollout", "undo"] if post => Request::Rollout {
            action: crate::rollout::RolloutAction::Undo {
                to: match query_value(query, "to").filter(|t| !t.is_empty()) {
                    None => None,
                    Some(t) => Some(
                        t.parse()
                            .map_err(|_| bad(format!("`{t}` is not a generation number")))?,
                    ),
                },
            },
        },
        ["state"] if post => Request::StateImport {
            state: body_as(body, "state")?,
        },
        ["gpu", index, "mig"] if post => {
            let gpu = index
                .parse()
                .map_err(|_| bad(format!("`{index}` is not a GPU index")))?;
            let b: MigBody = body_as(body, "mig")?;
            Request::MigMode {
                gpu,
                enable: b.enable,
            }
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no such API route {method} {path}"),
            ));
        }
    };
    Ok(Envelope {
        v: VERSION,
        host: query_value(query, "host")
            .filter(|h| !h.is_empty())
            .map(str::to_string),
        request,
        operator: None,
    })
}

/// A reply as HTTP: its status (202 for a command taken, else 200) and
/// its data as JSON, untagged (the route says what it is). Logs and
/// events are streamed by the server instead.
pub fn answer(reply: &Response) -> (u16, Vec<u8>) {
    let status = match reply {
        Response::Accepted(_) => 202,
        _ => 200,
    };
    // The tagged form is `{"reply": KIND, "data": DATA}`: the body is DATA.
    let body = serde_json::to_value(reply)
        .ok()
        .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
        .and_then(|data| serde_json::to_vec(&data).ok())
        .unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_request() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Groups,
            Request::Agents { group: None },
            Request::Agents {
                group: Some("speech_gpu".into()),
            },
            Request::GroupStart {
                group: "vision_gpu".into(),
            },
            Request::GroupStop {
                group: "infra_core".into(),
                with_dependents: true,
            },
            Request::GroupRestart {
                group: "infra_core".into(),
                with_dependents: false,
            },
            Request::AgentRestart {
                group: "speech_gpu".into(),
                agent: "STTService".into(),
            },
            Request::Scale {
                group: "g".into(),
                agent: "A".into(),
                replicas: Some(3),
            },
            Request::Scale {
                group: "g".into(),
                agent: "A".into(),
                replicas: None,
            },
            Request::Logs {
                group: "g".into(),
                agent: "A".into(),
                replica: 2,
                follow: true,
                tail: Some(10),
                since: Some(1_796_193_774),
                timestamps: true,
                json: true,
            },
            Request::Logs {
                group: "g".into(),
                agent: "A".into(),
                replica: 0,
                follow: false,
                tail: None,
                since: None,
                timestamps: false,
                json: false,
            },
            Request::Events {
                since: 42,
                follow: true,
            },
            Request::Apply {
                file_name: "x.yaml".into(),
                config_text: "version: 1\n".into(),
                force: false,
            },
            Request::Apply {
                file_name: "x.yaml".into(),
                config_text: "version: 1\n".into(),
                force: true,
            },
            Request::Reload,
            Request::Gpu,
            Request::Plan {
                file_name: "x.yaml".into(),
                config_text: "version: 1\n".into(),
            },
            Request::PlanFleet {
                config: None,
                agent: None,
            },
            Request::PlanFleet {
                config: Some(crate::request::ConfigFile {
                    file_name: "pc2.yaml".into(),
                    config_text: "version: 1\n".into(),
                }),
                agent: Some("vision_gpu/Eyes".into()),
            },
            Request::ConfigDiff { config: None },
            Request::ConfigDiff {
                config: Some(crate::request::ConfigFile {
                    file_name: "mainpc.yaml".into(),
                    config_text: "version: 1\n".into(),
                }),
            },
            Request::MigMode {
                gpu: 1,
                enable: true,
            },
            Request::Peers,
            Request::Fleet,
            Request::Slo { group: None },
            Request::Slo {
                group: Some("vision_gpu".into()),
            },
            Request::StateExport,
            Request::History,
            Request::Rollout {
                action: crate::rollout::RolloutAction::Status,
            },
            Request::Rollout {
                action: crate::rollout::RolloutAction::Pause,
            },
            Request::Rollout {
                action: crate::rollout::RolloutAction::Resume,
            },
            Request::Rollout {
                action: crate::rollout::RolloutAction::Undo { to: None },
            },
            Request::Rollout {
                action: crate::rollout::RolloutAction::Undo { to: Some(7) },
            },
            Request::StateImport {
                state: crate::wire::StateDocument {
                    kind: crate::wire::StateDocument::KIND.into(),
                    format: crate::wire::StateDocument::FORMAT,
                    host: "mainpc".into(),
                    generation: 3,
                    started_groups: vec!["infra_core".into()],
                    stopped_groups: vec!["vision_gpu".into()],
                    scale: [("STTService".to_string(), 2)].into(),
                    owned_mig: vec![crate::wire::OwnedMigInstance {
                        gpu_uuid: "GPU-1".into(),
                        gi_id: 2,
                        profile_id: 19,
                        placement_start: 4,
                    }],
                },
            },
        ]
    }

    #[test]
    fn every_request_survives_its_route() {
        for host in [None, Some("pc2".to_string())] {
            for r in every_request() {
                let env = Envelope::new(host.clone(), r);
                let route = to_route(&env);
                let (path, query) = match route.path.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (route.path.as_str(), None),
                };
                let back = from_route(
                    route.method.as_str(),
                    path,
                    query,
                    route.body.as_deref().unwrap_or_default(),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", route.path));
                assert_eq!(back, env, "{}", route.path);
            }
        }
    }

    #[test]
    fn routes_are_the_documented_ones() {
        let r = to_route(&Envelope::new(
            Some("pc2".into()),
            Request::GroupStart {
                group: "vision_gpu".into(),
            },
        ));
        assert_eq!(
            (r.method, r.path.as_str()),
            (Method::Post, "/v1/groups/vision_gpu/start?host=pc2")
        );
        // A stop without a body stops only the group itself.
        let e = from_route("POST", "/v1/groups/g/stop", None, b"").unwrap();
        assert_eq!(
            e.request,
            Request::GroupStop {
                group: "g".into(),
                with_dependents: false
            }
        );
    }

    #[test]
    fn wrong_routes_say_what_is_wrong() {
        let cases = [
            (
                "GET",
                "/v2/status",
                None,
                "",
                ErrorCode::NotFound,
                "this daemon speaks /v1",
            ),
            (
                "POST",
                "/v1/status",
                None,
                "",
                ErrorCode::NotFound,
                "no such API route",
            ),
            (
                "POST",
                "/v1/groups/g/explode",
                None,
                "",
                ErrorCode::BadRequest,
                "unknown group action `explode`",
            ),
            (
                "GET",
                "/v1/events",
                Some("since=x"),
                "",
                ErrorCode::BadRequest,
                "`since=x` is not a number",
            ),
            (
                "POST",
                "/v1/gpu/zero/mig",
                None,
                "{\"enable\":true}",
                ErrorCode::BadRequest,
                "`zero` is not a GPU index",
            ),
            (
                "POST",
                "/v1/apply",
                None,
                "{}",
                ErrorCode::BadRequest,
                "bad `apply` body",
            ),
        ];
        for (method, path, query, body, code, text) in cases {
            let e = from_route(method, path, query, body.as_bytes()).unwrap_err();
            assert_eq!(e.code, code, "{path}");
            assert!(e.message.contains(text), "{path}: {}", e.message);
        }
    }
    #[test]
    fn an_answer_is_its_data_untagged_with_its_status() {
        use crate::reply::{Accepted, LogText};
        let accepted = Accepted {
            message: "starting g".into(),
            groups: vec!["g".into()],
            events_from: 3,
        };
        assert_eq!(
            answer(&Response::Accepted(accepted.clone())),
            (202, serde_json::to_vec(&accepted).unwrap())
        );
        let logs = LogText { text: "a\n".into() };
        assert_eq!(
            answer(&Response::Logs(logs.clone())),
            (200, serde_json::to_vec(&logs).unwrap())
        );
        assert_eq!(answer(&Response::Groups(vec![])), (200, b"[]".to_vec()));
    }
}
