//! Deterministic NAS-like folder trees for the quickstart, the end-to-end tests and the
//! benchmark.
//!
//! A tree looks like a document share on a Synology NAS: project folders with office files,
//! PDFs, drawings and photos (`Projekte/{year}-{nnn} Objekt {n}/{building}/{cost group}/{phase}/`,
//! the shape the default linking rules expect), the same content copied into several places
//! (so the content-addressed store has something to deduplicate), a few large files, awkward
//! but valid names, and the junk a NAS and its clients leave behind (`@eaDir` thumbnails,
//! `#recycle`, Office lock files, `.DS_Store`, `Thumbs.db`, partial downloads). Everything
//! follows from `--seed`: two runs give byte-identical trees.
//!
//! The manifest (JSON lines) lists every regular file written: relative path, size, SHA-256,
//! and whether a built-in ignore rule should skip it.

pub mod samples;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to generate; the command line of `fms-corpus`.
#[derive(Clone, Debug, Parser)]
#[command(name = "fms-corpus", about = "Make a deterministic NAS-like folder tree")]
pub struct Options {
    /// The folder to fill; it must be empty or not exist yet.
    pub out: PathBuf,
    /// Regular files to sync (junk and odd names come on top).
    #[arg(long, default_value_t = 5000)]
    pub files: usize,
    /// Share of files that copy an earlier file's content.
    #[arg(long, default_value_t = 0.2)]
    pub dup_ratio: f64,
    /// Number of large files.
    #[arg(long, default_value_t = 2)]
    pub large: usize,
    /// Size of each large file in MiB.
    #[arg(long, default_value_t = 64)]
    pub large_mib: usize,
    /// Project folders (default: files / 400, at least 3).
    #[arg(long, default_value_t = 0)]
    pub projects: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of the regular files of a sample format (PDF, Office, JPEG, PNG, IFC, DWG, e-mail)
    /// written as a real file of that format with metadata (see `samples`), not random bytes.
    #[arg(long, default_value_t = 0.0)]
    pub real_formats: f64,
    /// Also write this many files of each sample format under `Samples/` (seeded, distinct).
    #[arg(long, default_value_t = 0)]
    pub samples: usize,
    /// Write a JSON-lines manifest here.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

impl Options {
    /// `files` files in `out`, the other options as on the command line (`["--large", "0"]`).
    pub fn with_args(out: &Path, files: usize, extra: &[&str]) -> Result<Options, clap::Error> {
        let files = files.to_string();
        let mut argv = vec!["fms-corpus", out.to_str().unwrap_or_default(), "--files", &files];
        argv.extend_from_slice(extra);
        Options::try_parse_from(argv)
    }
}

/// One regular file of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: i64,
    pub sha256: String,
    /// A built-in ignore rule skips it: no sync registers it.
    pub ignored: bool,
}

/// The tree as written: its files, and a one-line summary for people.
pub struct Corpus {
    pub root: PathBuf,
    pub manifest: Vec<ManifestEntry>,
}

impl std::fmt::Display for Corpus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept: Vec<&ManifestEntry> = self.manifest.iter().filter(|m| !m.ignored).collect();
        let bytes: i64 = kept.iter().map(|m| m.size).sum();
        let distinct: BTreeSet<&str> = kept.iter().map(|m| m.sha256.as_str()).collect();
        write!(
            formatter,
            "fms-corpus: {} files to sync ({:.1} MiB, {} distinct contents), {} junk files, in {}",
            kept.len(),
            bytes as f64 / (1u64 << 20) as f64,
            distinct.len(),
            self.manifest.len() - kept.len(),
            self.root.display()
        )
    }
}

/// Extensions with their weights: mostly PDFs, office files, drawings and photos.
const EXTENSIONS: &[(&str, u32)] = &[
    (".pdf", 30),
    (".docx", 12),
    (".xlsx", 10),
    (".dwg", 8),
    (".jpg", 15),
    (".png", 5),
    (".txt", 5),
    (".msg", 4),
    (".zip", 2),
    (".tar.gz", 1),
    ("", 2),
    (".JPG", 3),
    (".ifc", 3),
];
const BUILDINGS: &[&str] = &["Haus A", "Haus B", "Tiefgarage", "Aussenanlagen"];
const COST_GROUPS: &[&str] = &["KG 100", "KG 200", "KG 300", "KG 400", "KG 500", "KG 700"];
const PHASES: &[&str] = &[
    "LP1 Grundlagen",
    "LP3 Entwurf",
    "LP5 Ausfuehrung",
    "LP8 Objektueberwachung",
];
/// Awkward but valid names, under `Sonderfaelle/`.
const ODD_NAMES: &[&str] = &[
    "Ä Ö Ü ß/Grundriss Übersicht.pdf",
    "spaces  and\ttab.txt",
    "emoji 📐 plan.pdf",
    "no_extension",
    ".hidden.cfg",
    "UPPER.PDF",
    "dots.in.name.v2.final.xlsx",
    "semi;colon&amp'quote\".txt",
    "newline\nname.txt",
];
/// Contents kept for duplicates at most (memory stays bounded on large trees).
const DUPLICATE_POOL: usize = 2000;

/// Write the tree described by `options` and its manifest.
pub fn generate(options: &Options) -> Result<Corpus, String> {
    let root = std::path::absolute(&options.out).map_err(|e| format!("{}: {e}", options.out.display()))?;
    if std::fs::read_dir(&root)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
    {
        return Err(format!("{} exists and is not empty", root.display()));
    }
    let mut writer = TreeWriter {
        root: root.clone(),
        manifest: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let project_count = if options.projects > 0 {
        options.projects
    } else {
        (options.files / 400).max(3)
    };
    let projects: Vec<String> = (0..project_count)
        .map(|i| format!("Projekte/{}-{i:03} Objekt {i}", 2019 + i % 7))
        .collect();

    let mut pool: Vec<Vec<u8>> = Vec::new();
    for i in 0..options.files {
        let folder = format!(
            "{}/{}/{}/{}",
            pick(&mut rng, &projects),
            pick(&mut rng, BUILDINGS),
            pick(&mut rng, COST_GROUPS),
            pick(&mut rng, PHASES)
        );
        let extension = pick_extension(&mut rng);
        let name = format!("{folder}/Dokument {i:06}{extension}");
        if !pool.is_empty() && rng.random::<f64>() < options.dup_ratio {
            let index = rng.random_range(0..pool.len());
            writer.write(&name, &pool[index].clone(), false)?;
        } else {
            let real = options.real_formats > 0.0 && rng.random::<f64>() < options.real_formats;
            let sample = real.then(|| samples::of_extension(extension, i as u32)).flatten();
            let data = match sample {
                Some(data) => data,
                None => {
                    let size = file_size(&mut rng);
                    random_bytes(&mut rng, size)
                }
            };
            writer.write(&name, &data, false)?;
            if pool.len() < DUPLICATE_POOL {
                pool.push(data);
            }
        }
    }
    for i in 0..options.large {
        let project = pick(&mut rng, &projects).clone();
        let data = random_bytes(&mut rng, options.large_mib << 20);
        writer.write(&format!("{project}/Scans/Bestandsaufnahme {i}.tif"), &data, false)?;
    }
    for n in 0..options.samples {
        for (extension, data) in samples::one_of_each(n as u32 + 1_000_000) {
            writer.write(&format!("Samples/sample {n:04}{extension}"), &data, false)?;
        }
    }
    write_odd_names(&mut writer, &mut rng)?;
    for project in &projects {
        write_junk(&mut writer, &mut rng, project)?;
    }
    if let Some(path) = &options.manifest {
        write_manifest(path, &writer.manifest)?;
    }
    Ok(Corpus {
        root,
        manifest: writer.manifest,
    })
}

fn write_odd_names(writer: &mut TreeWriter, rng: &mut StdRng) -> Result<(), String> {
    let deep = format!("very/{}leaf.txt", "deep/".repeat(30));
    let names = ODD_NAMES.iter().copied().chain(std::iter::once(deep.as_str()));
    for name in names {
        let size = rng.random_range(1..=4096);
        let data = random_bytes(rng, size);
        writer.write(&format!("Sonderfaelle/{name}"), &data, false)?;
    }
    Ok(())
}

/// What a NAS and its clients leave in a share, all skipped by the built-in ignore rules.
fn write_junk(writer: &mut TreeWriter, rng: &mut StdRng, project: &str) -> Result<(), String> {
    let junk: [(&str, usize); 7] = [
        ("@eaDir/Foto.jpg/SYNOPHOTO_THUMB_M.jpg", 2048),
        ("#recycle/geloescht.docx", 1024),
        ("~$Angebot.docx", 162),
        (".DS_Store", 6148),
        ("Thumbs.db", 1024),
        ("download.pdf.crdownload", 4096),
        (".~lock.Kalkulation.xlsx#", 90),
    ];
    for (name, size) in junk {
        let data = random_bytes(rng, size);
        writer.write(&format!("{project}/{name}"), &data, true)?;
    }
    Ok(())
}

struct TreeWriter {
    root: PathBuf,
    manifest: Vec<ManifestEntry>,
}

impl TreeWriter {
    fn write(&mut self, relative: &str, data: &[u8], ignored: bool) -> Result<(), String> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
        self.manifest.push(ManifestEntry {
            path: relative.to_owned(),
            size: data.len() as i64,
            sha256: hex::encode(Sha256::digest(data)),
            ignored,
        });
        Ok(())
    }
}

fn write_manifest(path: &Path, manifest: &[ManifestEntry]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for entry in manifest {
        let line = serde_json::to_string(entry).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    out.flush().map_err(|e| format!("{}: {e}", path.display()))
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn pick_extension(rng: &mut StdRng) -> &'static str {
    let total: u32 = EXTENSIONS.iter().map(|(_, weight)| weight).sum();
    let mut x = rng.random_range(0..total);
    for (extension, weight) in EXTENSIONS {
        if x < *weight {
            return extension;
        }
        x -= weight;
    }
    EXTENSIONS[0].0
}

/// Log-normal around ~40 KiB (mean ~120 KiB), clipped to [1 B, 8 MiB]; 1% empty files.
fn file_size(rng: &mut StdRng) -> usize {
    if rng.random::<f64>() < 0.01 {
        return 0;
    }
    // Box–Muller: one standard normal value from two uniform ones.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let size = (10.6 + 1.5 * normal).exp();
    size.clamp(1.0, (8u64 << 20) as f64) as usize
}

fn random_bytes(rng: &mut StdRng, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, seed: &str) -> Corpus {
        let options = Options::with_args(dir, 300, &["--large", "1", "--large-mib", "1", "--seed", seed]).unwrap();
        generate(&options).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_tree_and_another_seed_another() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let first = make(&base.join("a"), "7");
        let second = make(&base.join("b"), "7");
        let third = make(&base.join("c"), "8");
        assert_eq!(first.manifest, second.manifest);
        assert_ne!(first.manifest, third.manifest);
    }

    #[test]
    fn the_manifest_matches_the_files_and_holds_duplicates_junk_and_odd_names() {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let corpus = make(&base.join("tree"), "1");
        for entry in &corpus.manifest {
            let data = std::fs::read(corpus.root.join(&entry.path)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&data)), entry.sha256, "{}", entry.path);
            assert_eq!(data.len() as i64, entry.size);
        }
        let kept: Vec<_> = corpus.manifest.iter().filter(|m| !m.ignored).collect();
        let distinct: BTreeSet<_> = kept.iter().map(|m| &m.sha256).collect();
        assert!(distinct.len() < kept.len(), "some contents repeat");
        assert_eq!(corpus.manifest.iter().filter(|m| m.ignored).count(), 3 * 7);
        assert!(kept.iter().any(|m| m.path == "Sonderfaelle/newline\nname.txt"));
        assert!(kept.iter().any(|m| m.size == 1 << 20 && m.path.ends_with(".tif")));
        assert!(
            generate(&Options::with_args(&corpus.root, 1, &[]).unwrap()).is_err(),
            "refuses a full folder"
        );
    }
}
