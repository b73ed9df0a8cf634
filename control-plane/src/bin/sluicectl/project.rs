//! `sluicectl project`: projects and their posture.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum ProjectCommand {
    /// Create a project; it starts in MOCK posture.
    Create {
        /// ORG/NAME
        path: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long, default_value = "")]
        default_model: String,
        /// Record up to this many bytes of each sampled request's prompt and completion on its
        /// trace (gen_ai.input.messages / gen_ai.output.messages). 0, the default: never.
        #[arg(long, default_value_t = 0)]
        capture_content_bytes: u32,
        /// Count its requests, tokens and cost per virtual key on the proxies' /metrics.
        #[arg(long)]
        metrics_by_key: bool,
    },
    Get {
        path: String,
    },
    List {
        org: String,
    },
    Update {
        path: String,
        #[arg(long)]
        display_name: Option<String>,
        /// An empty value clears it.
        #[arg(long)]
        default_model: Option<String>,
        /// Bytes of prompt and completion recorded on sampled traces; 0 stops recording.
        #[arg(long)]
        capture_content_bytes: Option<u32>,
        /// Whether the proxies count its requests, tokens and cost per virtual key.
        #[arg(long)]
        metrics_by_key: Option<bool>,
    },
    Delete {
        path: String,
    },
    /// What blocks LIVE, each with its fix (nothing listed: it may go LIVE).
    Readiness {
        path: String,
    },
    /// MOCK (no upstream calls, no cost) or LIVE (real calls, real money).
    SetPosture {
        path: String,
        posture: PostureArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PostureArg {
    Mock,
    Live,
}

pub(crate) const PROJECT_COLUMNS: &[&str] = &[
    "organization",
    "name",
    "posture",
    "default_model",
    "content_capture_bytes",
    "metrics_by_key",
    "created_at",
];

pub(crate) fn project_row(p: pb::Project) -> Vec<Value> {
    let posture = pb::Posture::try_from(p.posture)
        .map(|p| p.as_str_name())
        .unwrap_or("?");
    vec![
        json!(p.organization),
        json!(p.name),
        json!(posture.trim_start_matches("POSTURE_")),
        json!(p.default_model),
        json!(p.content_capture_bytes),
        json!(p.metrics_by_key),
        time(p.created_at_us),
    ]
}

pub(crate) async fn project(
    client: &mut Client,
    command: ProjectCommand,
) -> anyhow::Result<Listing> {
    Ok(match command {
        ProjectCommand::Create {
            path: p,
            display_name,
            default_model,
            capture_content_bytes,
            metrics_by_key,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .create_project(pb::CreateProjectRequest {
                    organization,
                    name,
                    display_name,
                    default_model,
                    content_capture_bytes: capture_content_bytes,
                    metrics_by_key,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::Get { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .get_project(pb::GetProjectRequest { organization, name })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::List { org } => {
            let response = client
                .list_projects(pb::ListProjectsRequest { organization: org })
                .await?;
            Listing::many(
                PROJECT_COLUMNS,
                response
                    .into_inner()
                    .projects
                    .into_iter()
                    .map(project_row)
                    .collect(),
            )
        }
        ProjectCommand::Update {
            path: p,
            display_name,
            default_model,
            capture_content_bytes,
            metrics_by_key,
        } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let response = client
                .update_project(pb::UpdateProjectRequest {
                    organization,
                    name,
                    display_name,
                    default_model,
                    content_capture_bytes: capture_content_bytes,
                    metrics_by_key,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
        ProjectCommand::Delete { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            client
                .delete_project(pb::DeleteProjectRequest { organization, name })
                .await?;
            deleted("project", &p)
        }
        ProjectCommand::Readiness { path: p } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let readiness = client
                .get_project_readiness(pb::GetProjectReadinessRequest { organization, name })
                .await?
                .into_inner();
            Listing::many(
                &["code", "model", "blocker", "fix"],
                readiness
                    .blockers
                    .into_iter()
                    .map(|b| {
                        vec![
                            json!(b.code),
                            json!(b.model),
                            json!(b.message),
                            json!(b.fix),
                        ]
                    })
                    .collect(),
            )
        }
        ProjectCommand::SetPosture { path: p, posture } => {
            let [organization, name] = path::<2>(&p, "ORG/NAME")?;
            let posture = match posture {
                PostureArg::Mock => pb::Posture::Mock,
                PostureArg::Live => pb::Posture::Live,
            } as i32;
            let response = client
                .set_project_posture(pb::SetProjectPostureRequest {
                    organization,
                    name,
                    posture,
                })
                .await?;
            Listing::one(
                PROJECT_COLUMNS,
                project_row(required(response.into_inner().project)?),
            )
        }
    })
}
