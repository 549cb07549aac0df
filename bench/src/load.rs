//! The cloud store under load: many concurrent clients committing small
//! batches while thousands of devices hold journal long-polls.
//!
//! By default the benchmark starts its own server in a child process (this
//! binary's hidden `load-server` subcommand: the embedded SQLite + folder
//! store in a temp dir, on a free loopback port) so that the server and the
//! clients each get their own file-descriptor budget; `--server URL` aims at
//! one already running instead (its login rate limits must allow the setup).
//!
//! Setup (not measured): one account per writer, plus enough idle accounts
//! to bring the long-polls to `long_polls`, sign up and log in (OPAQUE with
//! cheap Argon2 parameters; login cost is not what this measures). Then:
//! - every writer's account holds `pollers_per_writer` long-polls, which its
//!   commits wake; every idle account holds `pollers_per_account`. Each
//!   long-poll follows its account's journal (`wait`, then `journal` pages)
//!   for the whole run;
//! - `writers` tasks commit batches of `batch` metadata changes (updates of
//!   the writer's own entries, so none conflict) as fast as the server
//!   answers.
//!
//! After a warm-up, it measures for `duration_secs` and prints commits per
//! second, commit latency p50/p99/max, errors (must be zero) and the number
//! of long-polls the server held (sampled by the child every 250 ms).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coffer_crypto::login::KsfParams;
use coffer_crypto::MasterKey;
use coffer_engine::remote::{Accounts, HttpRemote, Remote};
use coffer_proto::api::Change;
use coffer_proto::{Cursor, DeviceId, EntryId, Revision, SealedMeta};
use rand::{RngCore, SeedableRng};

/// Options of `coffer-bench load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Aim at this server instead of starting one (`http://127.0.0.1:PORT`).
    #[arg(long)]
    server: Option<String>,
    /// Long-polls held in all (writers' own, then idle devices').
    #[arg(long, default_value_t = 10_000)]
    long_polls: usize,
    /// Long-polls on each writer's account (its own device and others, woken by its commits).
    #[arg(long, default_value_t = 1)]
    pollers_per_writer: usize,
    /// Long-polls per idle account (devices of accounts that are not committing).
    #[arg(long, default_value_t = 5)]
    pollers_per_account: usize,
    /// Concurrent committing clients (each on its own account).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Changes per commit.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Entries each writer cycles through.
    #[arg(long, default_value_t = 64)]
    entries_per_writer: usize,
    /// Sealed metadata size per change, bytes.
    #[arg(long, default_value_t = 256)]
    meta_bytes: usize,
    /// Warm-up before measuring, seconds.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Measured time, seconds.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Long-poll timeout asked of the server, seconds.
    #[arg(long, default_value_t = 25)]
    poll_timeout_secs: u64,
}

/// Options of the hidden `load-server` subcommand (the child process).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Data folder.
    #[arg(long)]
    data: PathBuf,
}

fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The child: a real `coffer server` (embedded stores) on a free loopback
/// port; prints `LISTENING <url>`, then `STATS <long-polls> <connections>`
/// every 250 ms; exits when its stdin closes.
pub fn run_server(args: &ServerArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut config = coffer_server::ServiceConfig::default();
        let open = coffer_server::ratelimit::RateLimit { burst: u32::MAX / 2, per_minute: u32::MAX / 2 };
        config.login_limit_per_account = open;
        config.login_limit_per_address = open;
        let service = coffer_server::server::open_embedded(&args.data, config).await?;
        let listen = coffer_server::server::ListenConfig {
            addr: ([127, 0, 0, 1], 0).into(),
            tls: None,
            insecure_plain_http: false,
            maintenance_every: Duration::from_secs(3600),
        };
        let server =
            coffer_server::server::serve(service, coffer_server::http::HttpConfig::default(), listen).await?;
        println!("LISTENING {}", server.base_url());
        std::io::stdout().flush()?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
            let _ = tx.send(());
        });
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tick.tick() => {
                    println!("STATS {} {}", server.service().long_polls_waiting(), server.connection_count());
                    std::io::stdout().flush()?;
                }
            }
        }
        Ok(())
    })
}

#[derive(Default)]
struct ServerStats {
    polls_now: AtomicUsize,
    polls_max: AtomicUsize,
    conns_max: AtomicUsize,
}

struct ChildServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(stats: Arc<ServerStats>) -> anyhow::Result<ChildServer> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["load-server", "--data"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server child")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let url = loop {
        match lines.next() {
            Some(line) => {
                if let Some(url) = line?.strip_prefix("LISTENING ") {
                    break url.to_owned();
                }
            }
            None => bail!("the server child exited before listening"),
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("STATS") {
                continue;
            }
            let polls: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let conns: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            stats.polls_now.store(polls, Ordering::Relaxed);
            stats.polls_max.fetch_max(polls, Ordering::Relaxed);
            stats.conns_max.fetch_max(conns, Ordering::Relaxed);
        }
    });
    Ok(ChildServer { child, url, _dir: dir })
}

#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    stop: AtomicBool,
    commits: AtomicU64,
    changes: AtomicU64,
    errors: AtomicU64,
    wakeups: AtomicU64,
    polls_outstanding: AtomicUsize,
    latencies_us: Mutex<Vec<u32>>,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let fd_limit = raise_fd_limit();
    let stats = Arc::new(ServerStats::default());
    let child = match &args.server {
        Some(_) => None,
        None => Some(start_child(stats.clone())?),
    };
    let url = args.server.clone().or_else(|| child.as_ref().map(|c| c.url.clone())).context("no server")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(drive(args, &url, &stats, fd_limit));
    drop(child);
    result
}

async fn drive(args: &Args, url: &str, stats: &ServerStats, fd_limit: u64) -> anyhow::Result<()> {
    let writer_polls = args.writers * args.pollers_per_writer;
    let idle_accounts =
        args.long_polls.saturating_sub(writer_polls).div_ceil(args.pollers_per_account.max(1));
    let n_accounts = args.writers + idle_accounts;
    let pollers_of =
        |i: usize| if i < args.writers { args.pollers_per_writer } else { args.pollers_per_account };
    let polls: usize = (0..n_accounts).map(pollers_of).sum();
    println!(
        "load: {} writers x {} changes/commit, {n_accounts} accounts, {polls} long-polls ({} per writer account), \
         {} s measured (fd limit {fd_limit})",
        args.writers, args.batch, args.pollers_per_writer, args.duration_secs
    );
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .build()?;
    let accounts = Accounts::with_client(client.clone(), url);

    // Setup: sign up and log in every account, a few at a time.
    let setup = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n_accounts);
    for i in 0..n_accounts {
        let accounts = accounts.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(i as u64);
            let master = MasterKey::generate(&mut rng);
            let name = format!("load-{i}-{}", std::process::id());
            let ksf = KsfParams::INSECURE_FAST;
            accounts
                .signup(
                    &mut rng,
                    &name,
                    "load test password",
                    &master,
                    &coffer_engine::settings::AccountSettings::for_new_account(),
                    &ksf,
                )
                .await?;
            let device = DeviceId::from_bytes([(i % 251) as u8; 16]);
            let done = accounts.login(&mut rng, &name, "load test password", device, &ksf).await?;
            anyhow::Ok(done.remote)
        }));
    }
    let mut remotes: Vec<HttpRemote> = Vec::with_capacity(n_accounts);
    for t in tasks {
        remotes.push(t.await??);
    }
    println!(
        "setup: {n_accounts} accounts signed up and logged in in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let counters = Arc::new(Counters::default());
    let poll_timeout = Duration::from_secs(args.poll_timeout_secs);

    // Long-polls: ramp up, then hold.
    let ramp = Instant::now();
    let poll_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?;
    let mut poll_tasks = Vec::with_capacity(polls);
    for (i, remote) in remotes.iter().enumerate() {
        for _ in 0..pollers_of(i) {
            let remote = HttpRemote::with_client(poll_client.clone(), url, remote.token().clone());
            let counters = counters.clone();
            poll_tasks.push(tokio::spawn(poller(remote, counters, poll_timeout)));
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters.polls_outstanding.load(Ordering::Relaxed) < polls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "long-polls: {} outstanding after {:.1} s ramp",
        counters.polls_outstanding.load(Ordering::Relaxed),
        ramp.elapsed().as_secs_f64()
    );

    // Writers.
    let mut writer_tasks = Vec::with_capacity(args.writers);
    for (w, remote) in remotes.iter().take(args.writers).enumerate() {
        let remote = remote.clone();
        let counters = counters.clone();
        let (batch, entries, meta_bytes) =
            (args.batch, args.entries_per_writer.max(args.batch), args.meta_bytes);
        writer_tasks.push(tokio::spawn(writer(w, remote, counters, batch, entries, meta_bytes)));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let errors_before = counters.errors.load(Ordering::Relaxed);
    counters.measuring.store(true, Ordering::SeqCst);
    let measured = Instant::now();
    let mut polls_min_during = usize::MAX;
    while measured.elapsed() < Duration::from_secs(args.duration_secs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        polls_min_during = polls_min_during.min(stats.polls_now.load(Ordering::Relaxed));
    }
    counters.measuring.store(false, Ordering::SeqCst);
    let secs = measured.elapsed().as_secs_f64();
    let polls_at_end = stats.polls_now.load(Ordering::Relaxed);
    counters.stop.store(true, Ordering::SeqCst);
    for t in writer_tasks {
        let _ = t.await;
    }
    for t in &poll_tasks {
        t.abort();
    }

    let commits = counters.commits.load(Ordering::Relaxed);
    let changes = counters.changes.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *counters.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let errors = counters.errors.load(Ordering::Relaxed);
    println!();
    println!(
        "commits/s            {:>10.0}   ({commits} commits, {changes} changes in {secs:.1} s)",
        commits as f64 / secs
    );
    println!("changes/s            {:>10.0}", changes as f64 / secs);
    println!("commit latency p50   {:>10.2} ms", pct(0.50));
    println!("commit latency p99   {:>10.2} ms", pct(0.99));
    println!("commit latency max   {:>10.2} ms", pct(1.0));
    println!("long-poll wake-ups/s {:>10.0}", counters.wakeups.load(Ordering::Relaxed) as f64 / secs);
    println!(
        "long-polls held      {:>10}   (server-side: min {} / end {} / max {} during the run; {} connections max)",
        polls,
        if polls_min_during == usize::MAX { 0 } else { polls_min_during },
        polls_at_end,
        stats.polls_max.load(Ordering::Relaxed),
        stats.conns_max.load(Ordering::Relaxed)
    );
    println!("errors               {:>10}   ({} during warm-up)", errors, errors_before);
    if let Some(e) = counters.first_error.lock().unwrap().as_ref() {
        println!("first error: {e}");
    }
    if errors > 0 {
        bail!("{errors} errors");
    }
    Ok(())
}

async fn poller(remote: HttpRemote, counters: Arc<Counters>, timeout: Duration) {
    let mut cursor = Cursor(0);
    loop {
        counters.polls_outstanding.fetch_add(1, Ordering::Relaxed);
        let page = remote.wait_journal(cursor, timeout).await;
        counters.polls_outstanding.fetch_sub(1, Ordering::Relaxed);
        if counters.stop.load(Ordering::Relaxed) {
            return;
        }
        match page {
            Ok(page) => {
                if !page.changes.is_empty() && counters.measuring.load(Ordering::Relaxed) {
                    counters.wakeups.fetch_add(1, Ordering::Relaxed);
                }
                cursor = page.cursor;
                let mut more = page.more;
                while more {
                    match remote.journal(cursor, None).await {
                        Ok(p) => {
                            cursor = p.cursor;
                            more = p.more;
                        }
                        Err(e) => {
                            counters.error(format!("journal: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                counters.error(format!("long-poll: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn writer(
    w: usize,
    remote: HttpRemote,
    counters: Arc<Counters>,
    batch: usize,
    entries: usize,
    meta_bytes: usize,
) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1_000_000 + w as u64);
    let ids: Vec<EntryId> = (0..entries)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            EntryId::from_bytes(b)
        })
        .collect();
    let mut revs = vec![Revision::ZERO; entries];
    let mut next = 0usize;
    while !counters.stop.load(Ordering::Relaxed) {
        let picked: Vec<usize> = (0..batch).map(|k| (next + k) % entries).collect();
        next = (next + batch) % entries;
        let changes: Vec<Change> = picked
            .iter()
            .map(|&i| {
                let mut meta = vec![0u8; meta_bytes];
                rng.fill_bytes(&mut meta);
                Change {
                    entry_id: ids[i],
                    base_revision: revs[i],
                    meta: Some(SealedMeta::from_sealed_bytes(meta)),
                    chunks: vec![],
                    delta: None,
                }
            })
            .collect();
        let start = Instant::now();
        let result = remote.commit(&changes).await;
        let took = start.elapsed();
        match result {
            Ok(resp) => {
                for (&i, r) in picked.iter().zip(&resp.results) {
                    match r {
                        coffer_proto::api::ChangeResult::Applied { revision, .. } => revs[i] = *revision,
                        coffer_proto::api::ChangeResult::Conflict { current_revision, .. } => {
                            counters.error("unexpected conflict");
                            revs[i] = *current_revision;
                        }
                    }
                }
                if counters.measuring.load(Ordering::Relaxed) {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    counters.changes.fetch_add(batch as u64, Ordering::Relaxed);
                    let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                    counters.latencies_us.lock().unwrap().push(us);
                }
            }
            Err(e) => {
                counters.error(format!("commit: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
