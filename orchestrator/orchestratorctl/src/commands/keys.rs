//! `keys generate HOST --out DIR`: a CURVE key pair for a host's
//! federation bus.

use std::path::Path;

use anyhow::Result;

use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

pub fn generate(host: &str, dir: &Path, out: &Out) -> Result<()> {
    let keys = orch_federation::keys::generate(dir, host)
        .map_err(|e| Exit::with(exit::FAILED, e.to_string()))?;
    let public = keys.public.to_z85();
    if out.format != Format::Table {
        return print_data(
            out.format,
            &serde_json::json!({
                "host": host,
                "secret_key_file": keys.secret_file.display().to_string(),
                "public_key_file": keys.public_file.display().to_string(),
                "public_key": public,
            }),
        );
    }
    println!(
        "wrote {} (secret, mode 0600) and {}",
        keys.secret_file.display(),
        keys.public_file.display()
    );
    println!(
        "on {host}:  federation: {{keys: {{secret_key_file: {}}}}}",
        keys.secret_file.display()
    );
    println!(
        "on its peers:  {{name: {host}, endpoint: \"tcp://{host}:7100\", public_key: \"{public}\"}}"
    );
    Ok(())
}
