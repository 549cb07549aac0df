//! The one function every transport calls: a [`Request`] in, a
//! [`Response`] or a [`ControlError`] out. No transport lives here, so the
//! Tauri shell can call [`dispatch`] directly and the HTTP transport only
//! moves JSON.

use std::collections::{BTreeMap, BTreeSet};

use coffer_proto::api::SessionId;
use coffer_proto::Revision;

use super::dto::*;
use super::{Control, DOWNLOAD_LIMIT_KEY, PAUSED_KEY, SERVE_UI_KEY, START_AT_LOGIN_KEY, UPLOAD_LIMIT_KEY};
use crate::home::Home;
use crate::model::{NodeKind, RelPath};
use crate::remote::{Remote, RemoteError};
use crate::sync::actions::{self, ActionError};
use crate::sync::activity::Activity;
use crate::sync::{Engine, EngineError};

/// Handles one request.
pub async fn dispatch<R: Remote>(ctl: &Control<R>, req: Request) -> Result<Response, ControlError> {
    let engine = ctl.engine();
    match req {
        Request::GetStatus => Ok(Response::Status(status(engine))),
        Request::GetQuota => {
            let u = engine.remote().usage().await.map_err(remote_error)?;
            Ok(Response::Quota(QuotaDto { used: u.used_bytes, limit: u.quota_bytes }))
        }
        Request::GetActivity => {
            Ok(Response::Activity { items: engine.activity().recent().into_iter().map(activity).collect() })
        }
        Request::ListConflicts => Ok(Response::Conflicts { items: conflicts(engine)? }),
        Request::ResolveConflict { path, keep } => {
            let keep = match keep {
                Keep::Mine => actions::Keep::Mine,
                Keep::Theirs => actions::Keep::Theirs,
                Keep::Both => actions::Keep::Both,
            };
            engine.resolve(&rel(&path)?, keep).await.map_err(action_error)?;
            let left = engine.index().conflicts().map_err(internal)?.len() as u64;
            engine.request_full_scan();
            // The status counts open conflicts; settle it now rather than
            // at the end of the next round.
            engine.update_status(|s| s.conflicts = left);
            engine.wake();
            Ok(Response::Done)
        }
        Request::ListFolder { path } => Ok(Response::Folder(list_folder(engine, &path)?)),
        Request::SetFolderSync { path, included } => set_folder_sync(engine, &path, included),
        Request::GetSettings => Ok(Response::Settings(settings(ctl)?)),
        Request::UpdateSettings(patch) => {
            update_settings(ctl, patch)?;
            Ok(Response::Settings(settings(ctl)?))
        }
        Request::ListVersions { path } => {
            let list = engine.versions(&rel(&path)?).await.map_err(action_error)?;
            let newest = list.iter().map(|v| v.revision).max();
            let items = list
                .into_iter()
                .map(|v| VersionDto {
                    revision: v.revision.0,
                    time_ms: v.time_ms,
                    device: v.device,
                    size: v.size,
                    deleted: v.deleted,
                    current: Some(v.revision) == newest,
                })
                .collect();
            Ok(Response::Versions { path, items })
        }
        Request::RestoreVersion { path, revision } => {
            let r = engine.restore(&rel(&path)?, Some(Revision(revision))).await.map_err(action_error)?;
            engine.wake();
            Ok(Response::Restored { revision: r.0 })
        }
        Request::GetAccount => Ok(Response::Account(account(ctl).await?)),
        Request::RevokeSession { id } => {
            let id: SessionId =
                id.parse().map_err(|_| ControlError::new(ErrorCode::BadRequest, "not a session id"))?;
            engine.remote().revoke_session(id).await.map_err(remote_error)?;
            Ok(Response::Done)
        }
        Request::Logout => {
            let home = need_home(ctl)?;
            let sessions = engine.remote().sessions().await.map_err(remote_error)?;
            if let Some(me) = sessions.iter().find(|s| s.current) {
                engine.remote().revoke_session(me.id).await.map_err(remote_error)?;
            }
            home.clear_credentials().map_err(internal)?;
            engine.set_paused(true);
            Ok(Response::Done)
        }
    }
}

/// The engine's status as the UI sees it.
pub fn status<R: Remote>(engine: &Engine<R>) -> StatusDto {
    let s = engine.status();
    let current = s
        .current
        .iter()
        .map(|p| FileProgressDto {
            path: p.clone(),
            bytes_done: if s.current.len() == 1 {
                s.current_bytes_done.min(s.current_bytes_total)
            } else {
                0
            },
            bytes_total: if s.current.len() == 1 { s.current_bytes_total } else { 0 },
        })
        .collect();
    StatusDto {
        state: s.state,
        root: engine.config().root.display().to_string(),
        device_name: engine.config().device_name.clone(),
        files_total: s.files_total,
        files_done: s.files_done.min(s.files_total),
        bytes_total: s.bytes_total,
        bytes_done: s.bytes_done.min(s.bytes_total),
        current,
        conflicts: s.conflicts,
        pending_deletions: s.pending_deletions,
        last_error: s.last_error,
    }
}

/// An activity item as the UI sees it.
pub fn activity(a: Activity) -> ActivityDto {
    let kind =
        serde_json::to_value(a.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    ActivityDto { time_ms: a.time_ms, kind, path: a.path, bytes: a.bytes }
}

fn rel(path: &str) -> Result<RelPath, ControlError> {
    RelPath::new(path.trim_matches('/')).map_err(|e| ControlError::new(ErrorCode::BadRequest, e.to_string()))
}

fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::new(ErrorCode::Internal, e.to_string())
}

fn remote_error(e: RemoteError) -> ControlError {
    let code = match &e {
        RemoteError::Api { status: 401, .. } => ErrorCode::NotLoggedIn,
        RemoteError::Api { status: 404, .. } => ErrorCode::NotFound,
        e if e.is_retryable() => ErrorCode::StoreUnreachable,
        _ => ErrorCode::StoreRefused,
    };
    ControlError::new(code, e.to_string())
}

fn action_error(e: ActionError) -> ControlError {
    match e {
        ActionError::Refused(m) => ControlError::new(ErrorCode::Refused, m),
        ActionError::Engine(EngineError::Remote(r)) => remote_error(r),
        ActionError::Engine(e) => internal(e),
    }
}

fn need_home<R: Remote>(ctl: &Control<R>) -> Result<&Home, ControlError> {
    ctl.home().ok_or_else(|| ControlError::new(ErrorCode::Refused, "this face has no account settings"))
}

fn side(engine: &Engine<impl Remote>, path: &RelPath, device: String) -> ConflictSideDto {
    let meta = std::fs::symlink_metadata(engine.config().root.join(path.as_str())).ok();
    let modified_ms = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    ConflictSideDto { path: path.to_string(), size: meta.map(|m| m.len()), modified_ms, device }
}

fn conflicts<R: Remote>(engine: &Engine<R>) -> Result<Vec<ConflictDto>, ControlError> {
    let remote = engine.index().remote().map_err(internal)?;
    let records = engine.index().conflicts().map_err(internal)?;
    Ok(records
        .into_iter()
        .map(|c| {
            let theirs_device = remote
                .get(&c.path)
                .and_then(|e| e.live.as_ref())
                .map(|l| l.device_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.remote_device.clone());
            ConflictDto {
                path: c.path.to_string(),
                created_ms: c.created_ms,
                mine: side(engine, &c.copy_path, engine.config().device_name.clone()),
                theirs: side(engine, &c.path, theirs_device),
            }
        })
        .collect())
}

/// Whether `path` syncs here, given the excluded folders.
fn sync_state(path: Option<&RelPath>, excluded: &BTreeSet<RelPath>) -> FolderSync {
    match path {
        None if excluded.is_empty() => FolderSync::Included,
        None => FolderSync::Partial,
        Some(p) if excluded.iter().any(|e| p.starts_with(e)) => FolderSync::Excluded,
        Some(p) if excluded.iter().any(|e| e.starts_with(p)) => FolderSync::Partial,
        Some(_) => FolderSync::Included,
    }
}

fn list_folder<R: Remote>(engine: &Engine<R>, path: &str) -> Result<FolderDto, ControlError> {
    let folder = if path.trim_matches('/').is_empty() { None } else { Some(rel(path)?) };
    let excluded = engine.index().excluded().map_err(internal)?;
    let remote = engine.index().remote().map_err(internal)?;
    let inside = |p: &RelPath| folder.as_ref().is_none_or(|f| p.starts_with(f) && p != f);
    let skip = folder.as_ref().map_or(0, |f| f.depth());
    let mut children: BTreeMap<String, TreeEntryDto> = BTreeMap::new();
    for (p, e) in &remote {
        let Some(live) = e.live.as_ref() else { continue };
        if !inside(p) {
            continue;
        }
        let Some(name) = p.as_str().split('/').nth(skip) else { continue };
        let child_path = match &folder {
            Some(f) => format!("{f}/{name}"),
            None => name.to_string(),
        };
        let direct = p.depth() == skip + 1;
        let entry = children.entry(name.to_string()).or_insert_with(|| TreeEntryDto {
            name: name.to_string(),
            path: child_path.clone(),
            kind: "folder".into(),
            size: 0,
            files: 0,
            has_folders: false,
            sync: FolderSync::Included,
            modified_ms: None,
        });
        match live.node.kind {
            NodeKind::Dir if direct => entry.kind = "folder".into(),
            NodeKind::Dir => entry.has_folders = true,
            _ => {
                entry.size += live.node.size;
                entry.files += 1;
                if direct {
                    entry.kind = "file".into();
                    entry.modified_ms = Some(live.node.mtime_ns / 1_000_000);
                }
            }
        }
    }
    let mut entries: Vec<TreeEntryDto> = children
        .into_values()
        .map(|mut e| {
            if e.kind == "folder" {
                e.sync = RelPath::new(e.path.clone())
                    .map_or(FolderSync::Included, |p| sync_state(Some(&p), &excluded));
            }
            e
        })
        .collect();
    entries.sort_by(|a, b| (a.kind != "folder", &a.name).cmp(&(b.kind != "folder", &b.name)));
    Ok(FolderDto {
        path: folder.as_ref().map_or_else(String::new, |f| f.to_string()),
        sync: sync_state(folder.as_ref(), &excluded),
        entries,
    })
}

fn set_folder_sync<R: Remote>(
    engine: &Engine<R>,
    path: &str,
    included: bool,
) -> Result<Response, ControlError> {
    let folder = rel(path)?;
    let excluded = engine.index().excluded().map_err(internal)?;
    let mut removed = 0u64;
    if included {
        // Folders inside come back too.
        for e in excluded.iter().filter(|e| e.starts_with(&folder) && *e != &folder) {
            engine.index().set_excluded(e, false).map_err(internal)?;
        }
        if excluded.contains(&folder) {
            engine.include(&folder).map_err(action_error)?;
        } else if let Some(ancestor) = excluded.iter().find(|e| folder.starts_with(e) && *e != &folder) {
            // A folder inside an excluded one: sync the way down to it, and
            // keep every other folder on that way excluded.
            let remote = engine.index().remote().map_err(internal)?;
            engine.include(ancestor).map_err(action_error)?;
            let mut level = ancestor.clone();
            while level != folder {
                let next = RelPath::new(
                    folder.as_str().split('/').take(level.depth() + 1).collect::<Vec<_>>().join("/"),
                )
                .map_err(internal)?;
                for (p, e) in &remote {
                    let is_dir = e.live.as_ref().is_some_and(|l| l.node.kind == NodeKind::Dir);
                    if is_dir && p.parent().as_ref() == Some(&level) && p != &next {
                        engine.index().set_excluded(p, true).map_err(internal)?;
                    }
                }
                level = next;
            }
        }
    } else {
        if excluded.iter().any(|e| folder.starts_with(e)) {
            return Ok(Response::FolderSync { path: folder.to_string(), included: false, removed: 0 });
        }
        // Excluding the folder covers what was excluded inside it.
        for e in excluded.iter().filter(|e| e.starts_with(&folder)) {
            engine.index().set_excluded(e, false).map_err(internal)?;
        }
        removed = engine.exclude(&folder).map_err(|e| {
            // Refused: what was excluded inside stays excluded.
            for x in excluded.iter().filter(|x| x.starts_with(&folder)) {
                let _ = engine.index().set_excluded(x, true);
            }
            action_error(e)
        })? as u64;
    }
    engine.request_full_scan();
    engine.wake();
    Ok(Response::FolderSync { path: folder.to_string(), included, removed })
}

fn flag<R: Remote>(engine: &Engine<R>, key: &str) -> Result<Option<String>, ControlError> {
    engine.index().get_meta(key).map_err(internal)
}

fn settings<R: Remote>(ctl: &Control<R>) -> Result<SettingsDto, ControlError> {
    let engine = ctl.engine();
    let device_name = match ctl.home() {
        Some(h) => h.device().map_err(internal)?.name,
        None => engine.config().device_name.clone(),
    };
    let num = |k| flag(engine, k).map(|v| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
    Ok(SettingsDto {
        device_name,
        upload_limit_kib: num(UPLOAD_LIMIT_KEY)?,
        download_limit_kib: num(DOWNLOAD_LIMIT_KEY)?,
        paused: engine.is_paused() || flag(engine, PAUSED_KEY)?.as_deref() == Some("1"),
        start_at_login: flag(engine, START_AT_LOGIN_KEY)?.as_deref() == Some("1"),
        serve_ui: flag(engine, SERVE_UI_KEY)?.as_deref() == Some("1"),
        excluded: engine.index().excluded().map_err(internal)?.iter().map(|p| p.to_string()).collect(),
    })
}

fn update_settings<R: Remote>(ctl: &Control<R>, p: SettingsPatch) -> Result<(), ControlError> {
    let engine = ctl.engine();
    let index = engine.index();
    if let Some(name) = p.device_name {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ControlError::new(
                ErrorCode::BadRequest,
                "a device name is 1 to 64 printable characters",
            ));
        }
        need_home(ctl)?.set_device_name(name).map_err(internal)?;
    }
    if let Some(kib) = p.upload_limit_kib {
        index.set_meta(UPLOAD_LIMIT_KEY, &kib.to_string()).map_err(internal)?;
        engine.limits().up.set_rate(kib.saturating_mul(1024));
    }
    if let Some(kib) = p.download_limit_kib {
        index.set_meta(DOWNLOAD_LIMIT_KEY, &kib.to_string()).map_err(internal)?;
        engine.limits().down.set_rate(kib.saturating_mul(1024));
    }
    if let Some(on) = p.start_at_login {
        index.set_meta(START_AT_LOGIN_KEY, if on { "1" } else { "0" }).map_err(internal)?;
    }
    if let Some(on) = p.serve_ui {
        index.set_meta(SERVE_UI_KEY, if on { "1" } else { "0" }).map_err(internal)?;
    }
    if let Some(paused) = p.paused {
        index.set_meta(PAUSED_KEY, if paused { "1" } else { "0" }).map_err(internal)?;
        engine.set_paused(paused);
        if !paused {
            engine.wake();
        }
    }
    Ok(())
}

async fn account<R: Remote>(ctl: &Control<R>) -> Result<AccountDto, ControlError> {
    let home = need_home(ctl)?;
    let creds = home
        .credentials()
        .map_err(internal)?
        .ok_or_else(|| ControlError::new(ErrorCode::NotLoggedIn, "this device is logged out"))?;
    let device = home.device().map_err(internal)?;
    let sessions = ctl.engine().remote().sessions().await.map_err(remote_error)?;
    Ok(AccountDto {
        email: creds.username.clone(),
        server: creds.server.clone(),
        device_id: device.id.to_string(),
        device_name: device.name,
        sessions: sessions
            .into_iter()
            .map(|s| SessionDto {
                id: s.id.to_string(),
                device_id: s.device_id.to_string(),
                created_ms: s.created_at.0,
                expires_ms: s.expires_at.0,
                current: s.current,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<RelPath> {
        paths.iter().map(|p| RelPath::new(*p).unwrap()).collect()
    }

    #[test]
    fn folder_states_follow_the_excluded_set() {
        let ex = set(&["a/b"]);
        let p = |s: &str| RelPath::new(s).unwrap();
        assert_eq!(sync_state(None, &ex), FolderSync::Partial);
        assert_eq!(sync_state(None, &set(&[])), FolderSync::Included);
        assert_eq!(sync_state(Some(&p("a")), &ex), FolderSync::Partial);
        assert_eq!(sync_state(Some(&p("a/b")), &ex), FolderSync::Excluded);
        assert_eq!(sync_state(Some(&p("a/b/c")), &ex), FolderSync::Excluded);
        assert_eq!(sync_state(Some(&p("a/bc")), &ex), FolderSync::Included);
        assert_eq!(sync_state(Some(&p("z")), &ex), FolderSync::Included);
    }
}
