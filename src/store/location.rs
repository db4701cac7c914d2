//! Where a session lives: a local directory, a `file://` URL, or a prefix in an object
//! store (`s3://bucket/prefix/session`).
//!
//! Both go through `object_store`: a local directory through its local backend
//! (`LocalFileSystem`, whose puts are atomic: staged, then renamed), S3 through
//! `AmazonS3`. What counts as a session and which samples file wins is
//! [`super::layout`]'s, for both.
//!
//! S3 credentials and endpoint come from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`, …) through `object_store`'s `AmazonS3Builder::from_env`. DataFusion
//! reads a remote session's Parquet straight from the store ([`Location::register`]);
//! small files (metadata.json, outputs) are read and written whole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use url::Url;

use super::layout::{self, Listing, SamplesSource};
use super::{METADATA_FILE, StoreError};

/// Files above this size are uploaded in parts.
const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;
/// Part size for multipart uploads (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where a session's samples come from.
#[derive(Debug, Clone)]
pub enum SamplesInput {
    /// Parquet: a path or URL DataFusion reads (`samples.parquet` or a `samples/` dir).
    Parquet(String),
    /// Rows already in memory (legacy sessions read from JSONL/CSV, live windows).
    Rows(Vec<super::schema::Sample>),
}

/// A session directory or prefix.
#[derive(Clone)]
pub enum Location {
    Local(PathBuf),
    Object(ObjectLocation),
}

/// A prefix in an object store.
#[derive(Clone)]
pub struct ObjectLocation {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: the URL the store is registered under in DataFusion.
    base: Url,
    /// Key prefix of the session, without leading or trailing `/`.
    prefix: ObjectPath,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object(o) => write!(f, "{}", o.url_of("")),
        }
    }
}

fn os_err(location: &str, source: object_store::Error) -> StoreError {
    StoreError::ObjectStore {
        location: location.to_string(),
        source: Box::new(source),
    }
}

impl Location {
    /// Parses a local path, `file:///abs/path` or `s3://bucket/prefix` (S3 settings from
    /// the standard AWS environment).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Self::parse_with(s, AmazonS3Builder::from_env())
    }

    /// [`Location::parse`] with explicit S3 settings (the bucket comes from the URL).
    pub fn parse_with(s: &str, s3: AmazonS3Builder) -> Result<Self, StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            path: PathBuf::from(s),
            message,
        };
        if let Some(rest) = s.strip_prefix("file://") {
            let url = Url::parse(s).map_err(|e| invalid(e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|_| invalid(format!("`{rest}` is not an absolute file path")))?;
            return Ok(Location::Local(path));
        }
        if s.starts_with("s3://") {
            let url = Url::parse(s).map_err(|e| invalid(e.to_string()))?;
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| invalid("no bucket in the s3:// URL".into()))?
                .to_string();
            // Fail within ~15 s (not object_store's default 3 min) when the store is
            // down; transient errors still get retried.
            let retry = object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(15),
                ..Default::default()
            };
            let store = s3
                .with_retry(retry)
                .with_bucket_name(&bucket)
                .build()
                .map_err(|e| invalid(format!("cannot configure S3 access: {e}")))?;
            let base = Url::parse(&format!("s3://{bucket}")).map_err(|e| invalid(e.to_string()))?;
            let prefix = ObjectPath::parse(url.path().trim_matches('/'))
                .map_err(|e| invalid(e.to_string()))?;
            return Ok(Location::Object(ObjectLocation {
                store: Arc::new(store),
                base,
                prefix,
            }));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(invalid(format!(
                "unsupported scheme `{scheme}://` (use a local path, file:// or s3://)"
            )));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// True for object-store locations.
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Object(_))
    }

    /// The local directory, when local.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Object(_) => None,
        }
    }

    /// A location below this one.
    pub fn child(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::Object(o) => Location::Object(ObjectLocation {
                store: o.store.clone(),
                base: o.base.clone(),
                prefix: o.key(name),
            }),
        }
    }

    /// The last path segment (the session's directory name).
    pub fn name(&self) -> String {
        match self {
            Location::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            Location::Object(o) => o
                .prefix
                .as_ref()
                .rsplit('/')
                .next()
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| o.base.to_string()),
        }
    }

    /// Path or URL of a file of the session, as DataFusion's `register_parquet` takes it.
    pub fn file_url(&self, name: &str) -> String {
        match self {
            Location::Local(p) => p.join(name).to_string_lossy().into_owned(),
            Location::Object(o) => o.url_of(name),
        }
    }

    /// Makes the object store known to DataFusion (no-op for local sessions).
    pub fn register(&self, ctx: &SessionContext) {
        if let Location::Object(o) = self {
            ctx.register_object_store(&o.base, o.store.clone());
        }
    }

    /// The session's `metadata.json`; `None` when absent.
    pub async fn read_metadata(&self) -> Result<Option<super::Metadata>, StoreError> {
        match self.read(METADATA_FILE).await? {
            Some(b) => super::parse_metadata(
                &String::from_utf8_lossy(&b),
                Path::new(&self.file_url(METADATA_FILE)),
            )
            .map(Some),
            None => Ok(None),
        }
    }

    /// The object-store view of this location: S3 as configured, a local directory
    /// through `object_store`'s local backend.
    pub fn objects(&self) -> Result<ObjectLocation, StoreError> {
        match self {
            Location::Object(o) => Ok(o.clone()),
            Location::Local(p) => {
                let abs = resolve(p).map_err(|e| StoreError::io(p, e))?;
                let prefix =
                    ObjectPath::from_absolute_path(&abs).map_err(|e| StoreError::Invalid {
                        path: p.clone(),
                        message: e.to_string(),
                    })?;
                Ok(ObjectLocation {
                    store: Arc::new(LocalFileSystem::new()),
                    base: Url::parse("file:///").map_err(|e| StoreError::Invalid {
                        path: p.clone(),
                        message: e.to_string(),
                    })?,
                    prefix,
                })
            }
        }
    }

    /// What the session directory (prefix) holds directly: one listing.
    pub async fn listing(&self) -> Result<Listing, StoreError> {
        let o = self.objects()?;
        let listed = match o.store.list_with_delimiter(Some(&o.prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Listing::default()),
            Err(e) => return Err(os_err(&self.file_url(""), e)),
        };
        let last = |p: &ObjectPath| p.filename().unwrap_or_default().to_string();
        Ok(Listing {
            files: listed.objects.iter().map(|m| last(&m.location)).collect(),
            dirs: listed.common_prefixes.iter().map(last).collect(),
        })
    }

    /// The session's samples, in [`SamplesSource::PREFERENCE`] order: complete Parquet
    /// (parts, or `samples.parquet` with its footer), else `samples.jsonl`, else
    /// `metrics.csv`.
    pub async fn samples_input(&self) -> Result<SamplesInput, StoreError> {
        if let Location::Local(dir) = self {
            super::check_session_dir(dir)?;
        }
        let listing = self.listing().await?;
        let named = |f: &str| PathBuf::from(self.file_url(f));
        // A samples.parquet without its footer, passed over for the next source.
        let mut footerless = None;
        for source in listing.samples() {
            match source {
                SamplesSource::Parts => {
                    return Ok(SamplesInput::Parquet(self.file_url(source.name())));
                }
                SamplesSource::Parquet => {
                    if self.parquet_footer_ok(source.name()).await? {
                        return Ok(SamplesInput::Parquet(self.file_url(source.name())));
                    }
                    footerless = Some(named(source.name()));
                }
                SamplesSource::Jsonl | SamplesSource::Csv => {
                    let Some(b) = self.read(source.name()).await? else {
                        continue;
                    };
                    if let Some(parquet) = &footerless {
                        tracing::warn!(
                            "{}: no footer (recorder crashed?); reading {} instead",
                            parquet.display(),
                            source.name()
                        );
                    }
                    let file = named(source.name());
                    let rows = if source == SamplesSource::Jsonl {
                        super::samples_jsonl_from_reader(&b[..], &file)?
                    } else {
                        super::samples_csv_from_reader(&b[..], &file)?
                    };
                    return Ok(SamplesInput::Rows(rows));
                }
            }
        }
        // The one samples file there is, unreadable: say so, not "no samples".
        if let Some(file) = footerless {
            return Err(StoreError::invalid(
                &file,
                "no Parquet footer (the recorder stopped before closing it?) and no \
                 samples.jsonl or metrics.csv beside it to read instead",
            ));
        }
        Err(StoreError::NotASession(PathBuf::from(self.to_string())))
    }

    /// Whether a Parquet file ends with a footer (what a crashed writer lacks): its last
    /// 8 bytes are the footer length and `PAR1`, and the length fits in the file.
    pub async fn parquet_footer_ok(&self, name: &str) -> Result<bool, StoreError> {
        let o = self.objects()?;
        let key = o.key(name);
        let url = self.file_url(name);
        let meta = o.store.head(&key).await.map_err(|e| os_err(&url, e))?;
        if meta.size < 12 {
            return Ok(false);
        }
        let tail = o
            .store
            .get_range(&key, meta.size - 8..meta.size)
            .await
            .map_err(|e| os_err(&url, e))?;
        let Some(&[a, b, c, d, ref magic @ ..]) = tail.get(..8) else {
            return Ok(false);
        };
        let len = u64::from(u32::from_le_bytes([a, b, c, d]));
        Ok(magic == b"PAR1" && len + 12 <= meta.size)
    }

    /// Whether the session has samples of any kind (without reading them).
    pub async fn has_samples(&self) -> Result<bool, StoreError> {
        Ok(self.listing().await?.samples().next().is_some())
    }

    /// Whether a file (or directory) of the session exists. Lists the parent (one
    /// request) rather than HEAD-ing the key: S3-compatible servers disagree on what a
    /// HEAD of a missing key under a missing "directory" returns.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let o = self.objects()?;
        let key = o.key(name);
        let parent: ObjectPath = key
            .as_ref()
            .rsplit_once('/')
            .map(|(d, _)| ObjectPath::from(d))
            .unwrap_or_default();
        let listing = match o.store.list_with_delimiter(Some(&parent)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(os_err(&self.file_url(name), e)),
        };
        Ok(listing.objects.iter().any(|m| m.location == key)
            || listing.common_prefixes.contains(&key))
    }

    /// Checks that the location can be reached with the configured credentials.
    pub async fn check_access(&self) -> Result<(), StoreError> {
        match self {
            Location::Local(_) => Ok(()),
            Location::Object(o) => o
                .store
                .list_with_delimiter(Some(&o.prefix))
                .await
                .map(|_| ())
                .map_err(|e| os_err(&o.url_of(""), e)),
        }
    }

    /// Reads a whole file; `None` when it does not exist.
    pub async fn read(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        let o = self.objects()?;
        let url = self.file_url(name);
        match o.store.get(&o.key(name)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| os_err(&url, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(&url, e)),
        }
    }

    /// Writes a whole file, atomically (a local put is staged, then renamed; an S3 put
    /// appears whole), in parts above 8 MiB.
    pub async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let o = self.objects()?;
        let url = self.file_url(name);
        if bytes.len() as u64 <= MULTIPART_THRESHOLD {
            return o
                .store
                .put(&o.key(name), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| os_err(&url, e));
        }
        let mut w = o.multipart(name).await?;
        w.put(Bytes::from(bytes));
        w.finish().await.map(|_| ()).map_err(|e| os_err(&url, e))
    }

    /// Uploads every file of local directory `dir` (recursively) below this location,
    /// in parts for files above 8 MiB. Returns the number of bytes uploaded.
    pub async fn upload_dir(&self, dir: &Path) -> Result<u64, StoreError> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        files.sort();
        let mut total = 0;
        for rel in files {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            total += self.upload_file(&dir.join(&rel), &name).await?;
        }
        Ok(total)
    }

    async fn upload_file(&self, path: &Path, name: &str) -> Result<u64, StoreError> {
        let size = std::fs::metadata(path)
            .map_err(|e| StoreError::io(path, e))?
            .len();
        if size <= MULTIPART_THRESHOLD {
            let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
            self.write(name, bytes).await?;
            return Ok(size);
        }
        let o = self.objects()?;
        let url = self.file_url(name);
        let mut w = o.multipart(name).await?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io(path, e))?;
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| StoreError::io(path, e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.map_err(|e| os_err(&url, e))?;
            w.write(buf.get(..n).unwrap_or_default());
        }
        w.finish().await.map_err(|e| os_err(&url, e))?;
        Ok(size)
    }

    /// Sessions at or below this location: directories (prefixes) holding
    /// metadata.json or samples ([`layout::session_of_key`]). Sorted, deduplicated.
    pub async fn find_sessions(&self) -> Result<Vec<Location>, StoreError> {
        if let Location::Local(p) = self
            && !p.is_dir()
        {
            return Err(StoreError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such session or directory"),
            ));
        }
        let o = self.objects()?;
        let prefix = (!o.prefix.as_ref().is_empty()).then_some(&o.prefix);
        let metas: Vec<_> = o
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| os_err(&self.file_url(""), e))?;
        let mut dirs: Vec<String> = metas
            .iter()
            .filter_map(|m| layout::session_of_key(m.location.as_ref()).map(str::to_string))
            .collect();
        dirs.sort();
        dirs.dedup();
        // A session's own sub-directories (`samples/`) are not sessions of their own.
        let mut sessions: Vec<String> = Vec::new();
        for d in dirs {
            if !sessions.iter().any(|s| d.starts_with(&format!("{s}/"))) {
                sessions.push(d);
            }
        }
        Ok(sessions
            .into_iter()
            .map(|d| match self {
                // Below the directory given, spelled as given (relative stays relative).
                Location::Local(p) => {
                    let rel = d.strip_prefix(o.prefix.as_ref()).unwrap_or(&d);
                    Location::Local(rel.split('/').filter(|s| !s.is_empty()).fold(
                        p.clone(),
                        |acc, seg| {
                            acc.join(
                                percent_encoding::percent_decode_str(seg)
                                    .decode_utf8_lossy()
                                    .as_ref(),
                            )
                        },
                    ))
                }
                Location::Object(o) => Location::Object(ObjectLocation {
                    store: o.store.clone(),
                    base: o.base.clone(),
                    prefix: ObjectPath::from(d.as_str()),
                }),
            })
            .collect())
    }
}

impl ObjectLocation {
    /// A multipart upload of `name` (parts of [`PART_SIZE`]) and the object's URL.
    async fn multipart(&self, name: &str) -> Result<WriteMultipart, StoreError> {
        let upload = self
            .store
            .put_multipart(&self.key(name))
            .await
            .map_err(|e| os_err(&self.url_of(name), e))?;
        Ok(WriteMultipart::new_with_chunk_size(upload, PART_SIZE))
    }

    /// The key of `name` below the prefix, taken literally (a Hive partition value such
    /// as `server=a%3A8000` keeps its `%`); segments `object_store` refuses (`..`,
    /// control characters) are encoded instead.
    fn key(&self, name: &str) -> ObjectPath {
        let name = name.trim_matches('/');
        if name.is_empty() {
            return self.prefix.clone();
        }
        let raw = if self.prefix.as_ref().is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        ObjectPath::parse(&raw).unwrap_or_else(|_| {
            let mut key = self.prefix.clone();
            for part in name.split('/').filter(|p| !p.is_empty()) {
                key = key.clone().join(part);
            }
            key
        })
    }

    fn url_of(&self, name: &str) -> String {
        let key = self.key(name);
        let base = self.base.as_str().trim_end_matches('/');
        if key.as_ref().is_empty() {
            base.to_string()
        } else {
            format!("{base}/{key}")
        }
    }
}

/// An absolute path without `.`/`..` (what `object_store` keys need), for directories
/// that may not exist yet: `..` is resolved lexically, then the deepest existing
/// ancestor is canonicalized (symlinks).
fn resolve(p: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let mut abs = PathBuf::new();
    for c in std::path::absolute(p)?.components() {
        match c {
            Component::ParentDir => {
                abs.pop();
            }
            Component::CurDir => {}
            other => abs.push(other),
        }
    }
    let mut missing = Vec::new();
    let mut cur = abs.as_path();
    loop {
        match std::fs::canonicalize(cur) {
            Ok(base) => return Ok(missing.iter().rev().fold(base, |acc, m| acc.join(m))),
            Err(_) => match (cur.parent(), cur.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_os_string());
                    cur = parent;
                }
                _ => return Ok(abs),
            },
        }
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        // Temp files of an interrupted write are not part of the session.
        if name.to_string_lossy().ends_with(".tmp") {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert!(
            matches!(Location::parse("results/x").unwrap(), Location::Local(p) if p == Path::new("results/x"))
        );
        assert!(
            matches!(Location::parse("file:///tmp/s1").unwrap(), Location::Local(p) if p == Path::new("/tmp/s1"))
        );
        let err = Location::parse("gs://b/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `gs://`"), "{err}");
        let err = Location::parse("s3:///x").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
        let s3 = Location::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(s3.to_string(), "s3://bucket/a/b");
        assert_eq!(
            s3.file_url("samples.parquet"),
            "s3://bucket/a/b/samples.parquet"
        );
        assert_eq!(s3.child("s1").to_string(), "s3://bucket/a/b/s1");
        assert_eq!(s3.child("s1").name(), "s1");
        assert!(s3.is_remote());
    }

    /// A local directory goes through object_store's local backend: reads, atomic
    /// writes, listings and session discovery, with `..` and not-yet-existing paths.
    #[test]
    fn local_sessions_through_the_object_store_api() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("lake");
            let a = Location::Local(root.join("x/../s1"));
            assert_eq!(a.read(METADATA_FILE).await.unwrap(), None);
            a.write(METADATA_FILE, b"{}".to_vec()).await.unwrap();
            a.write("samples/part-00000.parquet", b"x".to_vec())
                .await
                .unwrap();
            Location::Local(root.join("deep/s 2"))
                .write(layout::SAMPLES_JSONL, b"".to_vec())
                .await
                .unwrap();
            assert!(root.join("s1/metadata.json").is_file());
            assert_eq!(
                a.read(METADATA_FILE).await.unwrap().as_deref(),
                Some(&b"{}"[..])
            );
            let l = a.listing().await.unwrap();
            assert_eq!(l.files, [METADATA_FILE]);
            assert_eq!(l.dirs, [layout::SAMPLES_PARTS_DIR]);
            assert!(a.exists(layout::SAMPLES_PARTS_DIR).await.unwrap());
            assert!(!a.exists(layout::SAMPLES_CSV).await.unwrap());
            let found: Vec<String> = Location::Local(root.clone())
                .find_sessions()
                .await
                .unwrap()
                .iter()
                .map(|l| l.to_string())
                .collect();
            let spell = |p: &str| root.join(p).display().to_string();
            assert_eq!(found, [spell("deep/s 2"), spell("s1")]);
            // No temp files left behind by the atomic writes.
            let names: Vec<_> = std::fs::read_dir(root.join("s1"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 2, "{names:?}");
        });
    }
}
