//! The local-folder backend: `{path}/files/{sha256}{.ext}`, written atomically (a temporary
//! file in `{path}/.incoming`, fsynced, renamed into place), hashed while it is copied.

use super::{Content, StoreError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalStore {
    base: PathBuf,
}

impl LocalStore {
    pub fn new(base: impl Into<PathBuf>) -> LocalStore {
        LocalStore { base: base.into() }
    }

    pub fn describe(&self) -> String {
        format!("local folder {}", self.base.display())
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.base.join(key)
    }

    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.object_path(key)).await {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Other(format!("stat {key}: {error}"))),
        }
    }

    pub async fn put_file(&self, content: &Content, source: &Path) -> Result<(), StoreError> {
        let store = self.clone();
        let content = content.clone();
        let source = source.to_path_buf();
        tokio::task::spawn_blocking(move || store.put_blocking(&content, &source))
            .await
            .map_err(|error| StoreError::Other(format!("copy task failed: {error}")))?
    }

    fn put_blocking(&self, content: &Content, source: &Path) -> Result<(), StoreError> {
        let other = |what: &str, error: std::io::Error| StoreError::Other(format!("{what}: {error}"));
        let incoming = self.base.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(|e| other("create .incoming", e))?;
        let final_path = self.object_path(&content.key);
        let parent = final_path.parent().expect("keys have a folder");
        std::fs::create_dir_all(parent).map_err(|e| other("create files folder", e))?;
        let mut temp = tempfile::NamedTempFile::new_in(&incoming).map_err(|e| other("create temporary file", e))?;
        let reader = std::fs::File::open(source).map_err(|e| other(&format!("open {}", source.display()), e))?;
        let (sha256, size) = copy_hashing(reader, temp.as_file_mut()).map_err(|e| other("copy", e))?;
        if sha256 != content.sha256 || size != content.size {
            return Err(StoreError::ContentMismatch(format!(
                "{} now has {size} bytes with SHA-256 {sha256}",
                source.display()
            )));
        }
        temp.as_file().sync_all().map_err(|e| other("fsync", e))?;
        temp.persist(&final_path)
            .map_err(|e| other("rename into place", e.error))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.object_path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::Other(format!("delete {key}: {error}"))),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.list_folder("files").await
    }

    /// The objects directly in `folder` (a key prefix without its trailing slash).
    pub async fn list_folder(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let folder = self.base.join(prefix);
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(StoreError::Other(format!("list {}: {error}", folder.display()))),
            };
            let mut keys = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|error| StoreError::Other(error.to_string()))?;
                let size = entry
                    .metadata()
                    .map_err(|error| StoreError::Other(error.to_string()))?
                    .len();
                keys.push((format!("{prefix}/{}", entry.file_name().to_string_lossy()), size));
            }
            Ok(keys)
        })
        .await
        .map_err(|error| StoreError::Other(error.to_string()))?
    }

    /// Copy the object to `dest`, hashing it on the way (see `ObjectStore::download`).
    pub async fn download(&self, key: &str, dest: &Path) -> Result<Option<(String, u64)>, StoreError> {
        let path = self.object_path(key);
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || {
            let source = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(StoreError::Other(format!("{}: {error}", path.display()))),
            };
            let mut target = std::fs::File::create(&dest)
                .map_err(|error| StoreError::Other(format!("{}: {error}", dest.display())))?;
            copy_hashing(source, &mut target)
                .map(Some)
                .map_err(|error| StoreError::Other(format!("{}: {error}", path.display())))
        })
        .await
        .map_err(|error| StoreError::Other(error.to_string()))?
    }

    pub async fn read_digest(&self, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        let path = self.object_path(key);
        tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(file) => crate::fs::hash::digest(file)
                .map(Some)
                .map_err(|e| StoreError::Other(e.to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Other(error.to_string())),
        })
        .await
        .map_err(|error| StoreError::Other(error.to_string()))?
    }
}

fn copy_hashing(mut reader: impl Read, writer: &mut impl Write) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        writer.write_all(&buffer[..read])?;
        total += read as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_atomically_and_refuses_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("cas"));
        let source = dir.path().join("a.txt");
        std::fs::write(&source, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let content = Content {
            sha256: sha.into(),
            size: 3,
            key: format!("files/{sha}.txt"),
            parts: None,
        };
        assert_eq!(store.head(&content.key).await.unwrap(), None);
        store.put_file(&content, &source).await.unwrap();
        assert_eq!(store.head(&content.key).await.unwrap(), Some(3));
        assert_eq!(
            store.read_digest(&content.key).await.unwrap(),
            Some((sha.to_string(), 3))
        );

        std::fs::write(&source, b"abd").unwrap();
        let other_key = Content {
            key: format!("files/{sha}"),
            ..content.clone()
        };
        let error = store.put_file(&other_key, &source).await.unwrap_err();
        assert!(matches!(error, StoreError::ContentMismatch(_)), "{error}");
        assert_eq!(
            store.head(&other_key.key).await.unwrap(),
            None,
            "nothing stored under the old hash"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("cas/.incoming")).unwrap().count(),
            0,
            "no temporary file left"
        );
    }
}
