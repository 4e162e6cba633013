//! `keys generate HOST --out DIR`: a CURVE key pair for a host's
//! federation bus. `keys rotate HOST --dir DIR`: its next pair, beside the
//! current one, and the steps to change keys without downtime.

use std::path::Path;

use anyhow::Result;

use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// The port the shipped configs listen on for the federation.
const FEDERATION_PORT: u16 = 7300;

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
        "on its peers:  {{name: {host}, endpoint: \"tcp://{host}:{FEDERATION_PORT}\", public_key: \"{public}\"}}"
    );
    Ok(())
}

pub fn rotate(host: &str, dir: &Path, out: &Out) -> Result<()> {
    let keys = orch_federation::keys::rotate(dir, host)
        .map_err(|e| Exit::with(exit::FAILED, e.to_string()))?;
    let old = keys.current.to_z85();
    let new = keys.next.public.to_z85();
    let secret = dir.join(format!("{host}.key"));
    if out.format != Format::Table {
        return print_data(
            out.format,
            &serde_json::json!({
                "host": host,
                "current_public_key": old,
                "next_public_key": new,
                "next_secret_key_file": keys.next.secret_file.display().to_string(),
                "next_public_key_file": keys.next.public_file.display().to_string(),
            }),
        );
    }
    println!(
        "wrote {} (secret, mode 0600) and {}; {} is unchanged",
        keys.next.secret_file.display(),
        keys.next.public_file.display(),
        secret.display()
    );
    println!();
    println!("to change {host}'s key without downtime:");
    println!("1. on every peer of {host}, list both keys and reload (`orchestratorctl reload`):");
    println!(
        "     {{name: {host}, endpoint: \"tcp://{host}:{FEDERATION_PORT}\", public_keys: [\"{old}\", \"{new}\"]}}"
    );
    println!("   each peer then admits either key and dials both; nothing is seen down.");
    println!(
        "2. on {host}, put the new secret in place and restart orchestratord (agents keep running):"
    );
    println!(
        "     mv {} {}.old && mv {} {}",
        secret.display(),
        secret.display(),
        keys.next.secret_file.display(),
        secret.display()
    );
    println!(
        "   (or point `federation.keys.secret_key_file` at {}).",
        keys.next.secret_file.display()
    );
    println!(
        "3. once `orchestratorctl peers` on every peer shows {host} alive, list the new key alone there and reload:"
    );
    println!(
        "     {{name: {host}, endpoint: \"tcp://{host}:{FEDERATION_PORT}\", public_key: \"{new}\"}}"
    );
    println!("4. remove {}.old.", secret.display());
    Ok(())
}
