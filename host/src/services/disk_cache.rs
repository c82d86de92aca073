//! The host's on-disk cache directory, bounded in size: precompiled
//! components (`HEX-ENGINE.cwasm`), and what was pulled from registries
//! (`oci/blobs/sha256/HEX`, `oci/tags/HEX`).
//!
//! Every entry is written through a temporary file and a rename
//! ([`write_atomically`]), and touched (its modification time set to now)
//! whenever it is read, so its modification time is its last use.
//! [`DiskCache::prune`] brings the directory back under
//! `[server] cache_dir_max_size` by deleting the least recently used
//! entries first, as wasmtime's own cache does with
//! `files-total-size-soft-limit`, and never one that this host needs:
//! what a loaded version needs is pinned ([`DiskCache::pin`]) for as long
//! as the version lives (the handler of every route's current version and
//! its rollback history, the workers', the manifest's pulled components),
//! so only what no version here uses can go. The limit is soft: entries in
//! use stay even when they alone exceed it.
//!
//! Pruning runs off the request path, on the blocking pool
//! ([`DiskCache::prune_soon`]): at start, after every change to what is
//! loaded (deploy, hot load, rollback, removal, worker swap), and every
//! [`PRUNE_EVERY`].

use crate::observability::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the directory is pruned besides at start and after every
/// change to what is loaded: entries a version in use at that change
/// (a job still running on a swapped-out worker) released later go then.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A temporary file this old is left over from a writer that died (a write
/// takes seconds, and touches the file as it goes); it is deleted.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// What the cache directory holds for one key, and how it is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A precompiled component, `HEX-ENGINE.cwasm` at the top.
    Artifact,
    /// A registry blob (manifest or layer), `oci/blobs/sha256/HEX`.
    Blob,
    /// A tag's last resolution, `oci/tags/HEX`.
    Tag,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Artifact => "cwasm:",
            Kind::Blob => "blob:",
            Kind::Tag => "tag:",
        }
    }

    /// The pin key of the entries of `id`: the component's digest (hex)
    /// for an artifact, whatever engine compiled it; the blob's or tag's
    /// file name otherwise.
    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }
}

/// One file of the cache directory, as a scan found it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is.
    pub path: PathBuf,
    /// Its pin key; `None` for a temporary file, which is never chosen.
    pub key: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its last use: the modification time, set on every read.
    pub used: SystemTime,
}

/// What one prune did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Entries deleted (stale temporary files included).
    pub files: u64,
    /// Bytes they held.
    pub bytes: u64,
    /// What the directory's entries hold now.
    pub total: u64,
    /// Entries kept because a loaded version needs them.
    pub in_use: u64,
}

/// Keys of the entries that loaded versions need, counted.
type Pins = Arc<Mutex<HashMap<String, usize>>>;

/// Holds entries while what needs them lives: dropping it releases them.
#[must_use = "the entries are protected only while the pin lives"]
pub struct Pin {
    pins: Pins,
    keys: Vec<String>,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pin").field(&self.keys).finish()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().expect("pins lock");
        for key in &self.keys {
            if let Some(count) = pins.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(key);
                }
            }
        }
    }
}

/// The cache directory: its size limit, the entries in use, and the
/// pruning that keeps it under the limit.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    pins: Pins,
    /// Whether a prune is running, and whether another was asked for
    /// meanwhile: prunes never overlap, and requests coalesce.
    schedule: Mutex<Schedule>,
    /// Its figures in `GET /metrics`, for a host's cache.
    figures: Option<Figures>,
}

/// The cache directory's metrics.
struct Figures {
    /// `trellis_cache_dir_bytes`.
    bytes: IntGauge,
    /// `trellis_cache_dir_prunes_total`.
    prunes: IntCounter,
    /// `trellis_cache_dir_pruned_files_total`.
    pruned_files: IntCounter,
    /// `trellis_cache_dir_pruned_bytes_total`.
    pruned_bytes: IntCounter,
}

impl Figures {
    fn new(metrics: &Metrics) -> Figures {
        let gauge = |name: &str, help: &str| {
            metrics.register(&IntGauge::new(name, help).expect("valid metric"))
        };
        let counter = |name: &str, help: &str| {
            metrics.register(&IntCounter::new(name, help).expect("valid metric"))
        };
        Figures {
            bytes: gauge(
                "trellis_cache_dir_bytes",
                "Bytes the cache directory's entries (compiled components, registry blobs and tags) held after the last prune.",
            ),
            prunes: counter(
                "trellis_cache_dir_prunes_total",
                "Prunes of the cache directory run (at start, after changes, hourly).",
            ),
            pruned_files: counter(
                "trellis_cache_dir_pruned_files_total",
                "Cache directory entries deleted by pruning.",
            ),
            pruned_bytes: counter(
                "trellis_cache_dir_pruned_bytes_total",
                "Bytes of cache directory entries deleted by pruning.",
            ),
        }
    }
}

#[derive(Default)]
struct Schedule {
    running: bool,
    again: bool,
}

impl DiskCache {
    /// The cache directory `dir`, kept under `limit` bytes.
    pub fn new(dir: PathBuf, limit: u64) -> Arc<DiskCache> {
        Arc::new(DiskCache::build(dir, limit, None))
    }

    /// Like [`DiskCache::new`], reporting its size and prunes in `metrics`.
    pub fn with_metrics(dir: PathBuf, limit: u64, metrics: &Metrics) -> Arc<DiskCache> {
        Arc::new(DiskCache::build(dir, limit, Some(Figures::new(metrics))))
    }

    fn build(dir: PathBuf, limit: u64, figures: Option<Figures>) -> DiskCache {
        DiskCache {
            dir,
            limit,
            pins: Pins::default(),
            schedule: Mutex::new(Schedule::default()),
            figures,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Protects the entries of `keys` ([`Kind::key`]) from pruning until
    /// the returned pin is dropped.
    pub fn pin(&self, keys: impl IntoIterator<Item = String>) -> Pin {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut pins = self.pins.lock().expect("pins lock");
        for key in &keys {
            *pins.entry(key.clone()).or_default() += 1;
        }
        Pin {
            pins: self.pins.clone(),
            keys,
        }
    }

    fn pinned(&self) -> HashSet<String> {
        self.pins
            .lock()
            .expect("pins lock")
            .keys()
            .cloned()
            .collect()
    }

    fn is_pinned(&self, key: &str) -> bool {
        self.pins.lock().expect("pins lock").contains_key(key)
    }

    /// Prunes on the blocking pool, now or, when a prune is running, once
    /// more after it (asks made meanwhile coalesce). Without a runtime,
    /// prunes here.
    pub fn prune_soon(self: &Arc<Self>) {
        {
            let mut schedule = self.schedule.lock().expect("schedule lock");
            if schedule.running {
                schedule.again = true;
                return;
            }
            schedule.running = true;
        }
        let cache = self.clone();
        let work = move || {
            loop {
                cache.prune_and_log();
                let mut schedule = cache.schedule.lock().expect("schedule lock");
                if !schedule.again {
                    schedule.running = false;
                    return;
                }
                schedule.again = false;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// [`DiskCache::prune`], logging what it removed.
    pub fn prune_and_log(&self) -> Pruned {
        let pruned = self.prune();
        if let Some(figures) = &self.figures {
            figures
                .bytes
                .set(i64::try_from(pruned.total).unwrap_or(i64::MAX));
            figures.pruned_files.inc_by(pruned.files);
            figures.pruned_bytes.inc_by(pruned.bytes);
        }
        if pruned.files > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                files = pruned.files,
                bytes = pruned.bytes,
                total = pruned.total,
                limit = self.limit,
                in_use = pruned.in_use,
                "cache pruned"
            );
        }
        if pruned.total > self.limit {
            tracing::warn!(
                dir = %self.dir.display(),
                total = pruned.total,
                limit = self.limit,
                in_use = pruned.in_use,
                "cache directory over server.cache_dir_max_size: what is left is in use by loaded versions"
            );
        }
        // Last: whoever sees the count sees the rest (and the lines are
        // logged).
        if let Some(figures) = &self.figures {
            figures.prunes.inc();
        }
        pruned
    }

    /// Deletes stale temporary files, then the least recently used entries
    /// no loaded version needs until the directory fits the limit. An
    /// entry pinned between the choice and its deletion is kept.
    pub fn prune(&self) -> Pruned {
        let now = SystemTime::now();
        let entries = scan(&self.dir);
        let mut pruned = Pruned::default();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut failed = 0;
        for entry in entries.iter().filter(|e| e.key.is_none()) {
            let stale = now.duration_since(entry.used).unwrap_or_default() > STALE_TEMP;
            if stale && remove(&entry.path, &mut failed) {
                pruned.files += 1;
                pruned.bytes += entry.size;
                total -= entry.size;
            }
        }
        let entries: Vec<Entry> = entries.into_iter().filter(|e| e.key.is_some()).collect();
        let pinned = self.pinned();
        for chosen in select(&entries, total, self.limit, &pinned) {
            let entry = &entries[chosen];
            let key = entry.key.as_deref().unwrap_or_default();
            // Checked and deleted under the lock, so an entry pinned after
            // the choice is not deleted under its new user.
            let pins = self.pins.lock().expect("pins lock");
            if pins.contains_key(key) {
                continue;
            }
            if remove(&entry.path, &mut failed) {
                pruned.files += 1;
                pruned.bytes += entry.size;
                total -= entry.size;
            }
            drop(pins);
        }
        // What this host uses is marked recent, for the other hosts that
        // may share the directory and prune by last use.
        for entry in &entries {
            if entry.key.as_deref().is_some_and(|k| self.is_pinned(k)) {
                pruned.in_use += 1;
                touch(&entry.path);
            }
        }
        if failed > 0 {
            tracing::warn!(dir = %self.dir.display(), failed, "cache prune: some entries could not be deleted");
        }
        pruned.total = total;
        pruned
    }
}

/// Prunes `cache` now and every [`PRUNE_EVERY`], until aborted.
pub async fn prune_periodically(cache: Arc<DiskCache>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        cache.prune_soon();
    }
}

fn remove(path: &Path, failed: &mut u32) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        // Another host sharing the directory got there first.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            tracing::debug!(path = %path.display(), cause = %err, "cache prune: cannot delete");
            *failed += 1;
            false
        }
    }
}

/// Which of `entries` (totalling `total` bytes with what else the
/// directory holds) to delete to bring it within `limit`: the least
/// recently used first, never one whose key is in `in_use`, none once the
/// rest fits. Indices into `entries`, in deletion order.
pub fn select(entries: &[Entry], total: u64, limit: u64, in_use: &HashSet<String>) -> Vec<usize> {
    let mut candidates: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            entries[i]
                .key
                .as_ref()
                .is_some_and(|key| !in_use.contains(key))
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        (entries[a].used, &entries[a].path).cmp(&(entries[b].used, &entries[b].path))
    });
    let mut total = total;
    let mut chosen = Vec::new();
    for i in candidates {
        if total <= limit {
            break;
        }
        total = total.saturating_sub(entries[i].size);
        chosen.push(i);
    }
    chosen
}

/// Every file the host keeps under `dir`: the artifacts at the top, the
/// blobs and the tags, and temporary files beside them. Nothing else of
/// the directory is looked at or counted.
pub fn scan(dir: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    let places = [
        (dir.to_owned(), Kind::Artifact),
        (dir.join("oci").join("blobs").join("sha256"), Kind::Blob),
        (dir.join("oci").join("tags"), Kind::Tag),
    ];
    for (place, kind) in places {
        let Ok(read) = std::fs::read_dir(&place) else {
            continue;
        };
        for item in read.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let key = match (id_of(kind, name), is_temp(kind, name)) {
                (Some(id), _) => Some(kind.key(id)),
                (None, true) => None,
                (None, false) => continue,
            };
            entries.push(Entry {
                path: item.path(),
                key,
                size: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    entries
}

/// The id of a file named `name` holding a `kind` entry, if it is one.
fn id_of(kind: Kind, name: &str) -> Option<&str> {
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match kind {
        Kind::Artifact => {
            let stem = name.strip_suffix(".cwasm")?;
            let (digest, engine) = stem.split_once('-')?;
            let engine_ok = engine.len() == 16 && engine.bytes().all(|b| b.is_ascii_hexdigit());
            (hex(digest) && engine_ok).then_some(digest)
        }
        Kind::Blob | Kind::Tag => hex(name).then_some(name),
    }
}

/// The marker of a temporary file's name ([`write_atomically`]).
const TEMP_MARK: &str = ".tmp";

/// Whether `name` is a temporary file of a `kind` entry: the entry's name,
/// [`TEMP_MARK`], and digits and dashes (older hosts replaced `.cwasm`
/// with the mark).
fn is_temp(kind: Kind, name: &str) -> bool {
    let Some((base, tail)) = name.rsplit_once(TEMP_MARK) else {
        return false;
    };
    let tail_ok = !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    tail_ok
        && (id_of(kind, base).is_some()
            || (kind == Kind::Artifact && id_of(kind, &format!("{base}.cwasm")).is_some()))
}

/// Writes `bytes` to `path` through a temporary file beside it and a
/// rename, so a reader (and a prune) never sees half an entry: the
/// temporary file's name (`NAME.tmpPID-N`) is unique to this write, and
/// [`DiskCache::prune`] never chooses one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!("{TEMP_MARK}{}-{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Marks the entry at `path` used now (best effort: a read-only cache
/// only loses its order of use).
pub fn touch(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(err) = touched {
        tracing::debug!(path = %path.display(), cause = %err, "cannot mark a cache entry used");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, age_s: u64) -> Entry {
        Entry {
            path: PathBuf::from(name),
            key: Some(Kind::Blob.key(name)),
            size,
            used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s),
        }
    }

    fn names(entries: &[Entry], chosen: &[usize]) -> Vec<String> {
        chosen
            .iter()
            .map(|&i| entries[i].path.display().to_string())
            .collect()
    }

    #[test]
    fn selects_the_least_recently_used_that_are_not_in_use_until_it_fits() {
        let entries = vec![
            entry("new", 10, 1),
            entry("oldest-in-use", 10, 500),
            entry("old", 10, 300),
            entry("older", 10, 400),
            entry("middle", 10, 200),
        ];
        let in_use: HashSet<String> = [Kind::Blob.key("oldest-in-use")].into();
        let total = 50;

        // Under the limit: nothing.
        assert!(select(&entries, total, 50, &in_use).is_empty());
        // 5 over: one entry, the oldest one not in use.
        assert_eq!(
            names(&entries, &select(&entries, total, 45, &in_use)),
            ["older"]
        );
        // 20 over: two, oldest first; stops once it fits.
        assert_eq!(
            names(&entries, &select(&entries, total, 30, &in_use)),
            ["older", "old"]
        );
        // Nothing fits: everything but what is in use, oldest first.
        assert_eq!(
            names(&entries, &select(&entries, total, 0, &in_use)),
            ["older", "old", "middle", "new"]
        );
        // What else the directory holds counts toward the total.
        assert_eq!(
            names(&entries, &select(&entries, total + 100, 120, &in_use)),
            ["older", "old", "middle"]
        );
    }

    #[test]
    fn never_selects_temporary_files() {
        let mut temp = entry("being-written", 100, 10_000);
        temp.key = None;
        let entries = vec![temp, entry("a", 10, 1)];
        assert_eq!(
            names(&entries, &select(&entries, 110, 0, &HashSet::new())),
            ["a"]
        );
    }

    /// A fresh directory under the system's temporary directory.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trellis-disk-cache-{tag}-{}-{}",
            std::process::id(),
            crate::ids::random_hex(64)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn aged(path: &Path, bytes: usize, age_s: u64) {
        write_atomically(path, &vec![7; bytes]).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
    }

    #[test]
    fn prunes_the_directory_keeping_pinned_entries_and_temporary_files() {
        let dir = temp_dir("prune");
        let hex = |c: char| c.to_string().repeat(64);
        let artifact = |c: char| dir.join(format!("{}-00112233445566ff.cwasm", hex(c)));
        let blob = |c: char| dir.join("oci/blobs/sha256").join(hex(c));
        aged(&artifact('a'), 1000, 400);
        aged(&artifact('b'), 1000, 300);
        aged(&blob('c'), 1000, 500);
        aged(&blob('d'), 1000, 100);
        aged(&dir.join("oci/tags").join(hex('e')), 100, 50);
        // Not the host's: neither counted nor deleted.
        aged(&dir.join("notes.txt"), 5000, 1000);
        aged(&dir.join("notes.tmp1-1"), 5000, 7200);
        // Being written now, and left over by a writer that died.
        aged(
            &dir.join(format!("{}-00112233445566ff.cwasm.tmp1-1", hex('f'))),
            1000,
            1,
        );
        aged(
            &dir.join(format!("{}-00112233445566ff.tmp12", hex('0'))),
            1000,
            7200,
        );

        let cache = DiskCache::new(dir.clone(), 3100);
        let pin = cache.pin([Kind::Blob.key(&hex('c')), Kind::Artifact.key(&hex('a'))]);
        let pruned = cache.prune();
        // The stale temporary file, then `b` (the oldest not in use): 1000
        // (a) + 1000 (c) + 1000 (d) + 100 (e) + 1000 (the fresh temporary
        // file) > 3100, so `d` too; then it fits and the tag stays.
        assert_eq!(pruned.files, 3, "{pruned:?}");
        assert_eq!(pruned.bytes, 3000);
        assert_eq!(pruned.total, 3100);
        assert_eq!(pruned.in_use, 2);
        assert!(artifact('a').exists() && blob('c').exists());
        assert!(!artifact('b').exists() && !blob('d').exists());
        assert!(dir.join("oci/tags").join(hex('e')).exists());
        assert!(dir.join("notes.txt").exists() && dir.join("notes.tmp1-1").exists());
        assert!(
            dir.join(format!("{}-00112233445566ff.cwasm.tmp1-1", hex('f')))
                .exists()
        );
        assert!(
            !dir.join(format!("{}-00112233445566ff.tmp12", hex('0')))
                .exists()
        );

        // Released: the least recently used go first. Pruning touched the
        // entries in use, so the tag is now the oldest.
        drop(pin);
        let cache = DiskCache::new(dir.clone(), 3000);
        let pruned = cache.prune();
        assert_eq!((pruned.files, pruned.bytes), (1, 100), "{pruned:?}");
        assert!(!dir.join("oci/tags").join(hex('e')).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
