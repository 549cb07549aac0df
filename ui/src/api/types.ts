// The control API's types, as crates/coffer-engine/src/control/dto.rs
// defines them (change both together). Sizes are bytes, times are ms since
// the Unix epoch, paths are relative to the sync folder ("" is the top).

export type SyncState = 'up_to_date' | 'syncing' | 'paused' | 'offline' | 'error' | 'needs_confirmation';
export type Keep = 'mine' | 'theirs' | 'both';
export type FolderSync = 'included' | 'excluded' | 'partial';
export type ErrorCode =
  | 'bad_request' | 'not_found' | 'refused' | 'unauthorized' | 'forbidden'
  | 'not_logged_in' | 'store_unreachable' | 'store_refused' | 'internal'
  | 'transport';

export interface SettingsPatch {
  device_name?: string;
  upload_limit_kib?: number;
  download_limit_kib?: number;
  paused?: boolean;
  start_at_login?: boolean;
  serve_ui?: boolean;
}

export type Request =
  | { type: 'get_status' }
  | { type: 'get_quota' }
  | { type: 'get_activity' }
  | { type: 'list_conflicts' }
  | { type: 'resolve_conflict'; path: string; keep: Keep }
  | { type: 'list_folder'; path: string }
  | { type: 'set_folder_sync'; path: string; included: boolean }
  | { type: 'get_settings' }
  | ({ type: 'update_settings' } & SettingsPatch)
  | { type: 'list_versions'; path: string }
  | { type: 'restore_version'; path: string; revision: number }
  | { type: 'get_account' }
  | { type: 'revoke_session'; id: string }
  | { type: 'logout' };

export interface FileProgress { path: string; bytes_done: number; bytes_total: number }
export interface Status {
  state: SyncState;
  root: string;
  device_name: string;
  files_total: number;
  files_done: number;
  bytes_total: number;
  bytes_done: number;
  current: FileProgress[];
  conflicts: number;
  pending_deletions: number;
  last_error: string | null;
}
export interface Quota { used: number; limit: number }
export interface Activity { time_ms: number; kind: string; path: string; bytes: number }
export interface ConflictSide { path: string; size: number | null; modified_ms: number | null; device: string }
export interface Conflict { path: string; created_ms: number; mine: ConflictSide; theirs: ConflictSide }
export interface TreeEntry {
  name: string;
  path: string;
  kind: 'folder' | 'file';
  size: number;
  files: number;
  has_folders: boolean;
  sync: FolderSync;
  modified_ms: number | null;
}
export interface Folder { path: string; sync: FolderSync; entries: TreeEntry[] }
export interface Settings {
  device_name: string;
  upload_limit_kib: number;
  download_limit_kib: number;
  paused: boolean;
  start_at_login: boolean;
  serve_ui: boolean;
  excluded: string[];
}
export interface Version { revision: number; time_ms: number; device: string; size: number; deleted: boolean; current: boolean }
export interface Session { id: string; device_id: string; created_ms: number; expires_ms: number; current: boolean }
export interface Account { email: string; server: string; device_id: string; device_name: string; sessions: Session[] }

export type Response =
  | ({ type: 'status' } & Status)
  | ({ type: 'quota' } & Quota)
  | { type: 'activity'; items: Activity[] }
  | { type: 'conflicts'; items: Conflict[] }
  | ({ type: 'folder' } & Folder)
  | ({ type: 'settings' } & Settings)
  | { type: 'versions'; path: string; items: Version[] }
  | { type: 'restored'; revision: number }
  | { type: 'folder_sync'; path: string; included: boolean; removed: number }
  | ({ type: 'account' } & Account)
  | { type: 'done' };

export type EngineEvent = ({ type: 'status' } & Status) | ({ type: 'activity' } & Activity);

// The desktop app's first run (src-tauri/src/core.rs: SetupRequest,
// SetupDto). Only the Tauri shell answers these.
export type SetupStep = 'store' | 'account' | 'recovery' | 'folder' | 'choose' | 'done';
export type SetupRequest =
  | { type: 'get_setup' }
  | { type: 'use_local_store' }
  | { type: 'use_server'; url: string }
  | { type: 'signup'; email: string; password: string }
  | { type: 'login'; email: string; password: string }
  | { type: 'confirm_recovery_key' }
  | { type: 'choose_folder'; path: string }
  | { type: 'change_store' }
  | { type: 'finish_setup' };
export interface Setup {
  type: 'setup';
  step: SetupStep;
  store: 'local' | 'server' | null;
  store_url: string | null;
  account: string | null;
  recovery_key: string | null;
  folder: string;
}
