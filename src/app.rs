//! Turning the configuration into the engine's parts: catalog connections, the object
//! store, the roots, the ignore matcher.

use crate::config::{Config, StorageConfig};
use fms_actors::catalog::Catalog;
use fms_actors::scan::RootSpec;
use fms_actors::store::{LocalStore, ObjectStore, S3Settings, S3Store};

/// A catalog connection, with the schema brought up to date first (under the advisory lock).
pub async fn open_catalog_migrated(config: &Config) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::connect(&config.database.target(), &config.agent).await?;
    catalog
        .migrate()
        .await
        .map_err(|error| anyhow::anyhow!("migration failed: {}", error.detail()))?;
    Ok(catalog)
}

/// Another connection, for a second user of the catalog in the same process.
pub async fn open_catalog(config: &Config) -> anyhow::Result<Catalog> {
    Ok(Catalog::open(&config.database.target(), &config.agent).await?)
}

pub fn object_store(config: &Config) -> ObjectStore {
    match &config.storage {
        StorageConfig::Local { path } => ObjectStore::Local(LocalStore::new(path)),
        StorageConfig::S3 {
            bucket,
            endpoint,
            region,
            path_style,
            access_key_id,
            secret_access_key,
            multipart_threshold,
            part_size,
            ca_file: _,
            ca_pem,
            integrity,
            timeout,
        } => ObjectStore::S3(S3Store::new(&S3Settings {
            bucket: bucket.clone(),
            endpoint: endpoint.clone(),
            region: region.clone(),
            path_style: *path_style,
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
            multipart_threshold: *multipart_threshold,
            part_size: *part_size,
            ca_pem: ca_pem.clone(),
            integrity: *integrity,
            timeout: *timeout,
        })),
    }
}

pub fn roots(config: &Config) -> Vec<RootSpec> {
    config
        .roots
        .iter()
        .map(|root| RootSpec {
            label: root.label.clone(),
            path: root.path.clone(),
        })
        .collect()
}

pub fn root_labels(config: &Config) -> Vec<String> {
    config.roots.iter().map(|root| root.label.clone()).collect()
}

pub fn upload_settings(config: &Config) -> fms_actors::upload::UploadSettings {
    fms_actors::upload::UploadSettings {
        concurrency: config.upload.concurrency as usize,
        max_attempts: config.upload.max_attempts as i32,
        lease: config.upload.lease,
        ..Default::default()
    }
}
