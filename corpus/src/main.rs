//! `fms-corpus OUT_DIR [--files N] [--dup-ratio R] [--large N] [--large-mib M] [--projects P]
//! [--seed S] [--manifest FILE]`: see the library's documentation.

use clap::Parser;

fn main() {
    let options = fms_corpus::Options::parse();
    match fms_corpus::generate(&options) {
        Ok(summary) => println!("{summary}"),
        Err(error) => {
            eprintln!("fms-corpus: {error}");
            std::process::exit(1);
        }
    }
}
