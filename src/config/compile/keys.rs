//! `[[tokens.keys]]` → the gateway's [`Keyring`] and its signing key: each
//! key's material read from its file or environment variable, and a
//! warning when a private key is one anyone could hold. The static keys of
//! `[[issuers.keys]]` are loaded the same way ([`add_key`]).

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::auth::keys::KeyMaterial;
use crate::auth::{Keyring, SigningKey};
use crate::config::raw::{KeyAlgorithm, RawKey, RawTokens};
use crate::config::Diagnostics;

/// Every key of `[[tokens.keys]]`, and the one `signing_key` names.
pub(super) fn keyring(
    tokens: &RawTokens,
    base: &Path,
    sink: &mut Diagnostics,
) -> (Keyring, Option<SigningKey>) {
    let mut keyring = Keyring::default();
    let mut kids = HashSet::new();
    for key in &tokens.keys {
        if key.kid.get_ref().is_empty() || !kids.insert(key.kid.get_ref().clone()) {
            sink.at(
                key.kid.span(),
                format!("kid {:?} is empty or used twice", key.kid.get_ref()),
            );
            continue;
        }
        add_key(key, base, &mut keyring, sink);
    }
    let signer = tokens
        .signing_key
        .as_ref()
        .and_then(|kid| signing_key(kid, &kids, &mut keyring, sink));
    (keyring, signer)
}

/// The key `kid` names, taken out of the keyring to sign with. `kids` are
/// the kids configured, loaded or not.
fn signing_key(
    kid: &Spanned<String>,
    kids: &HashSet<String>,
    keyring: &mut Keyring,
    sink: &mut Diagnostics,
) -> Option<SigningKey> {
    let name = kid.get_ref();
    if keyring.can_sign(name) {
        return keyring.take_signing(name);
    }
    if keyring.get(name).is_some() {
        sink.at(
            kid.span(),
            format!("signing key {name:?} has no private key or secret"),
        );
    } else if !kids.contains(name) {
        sink.at(
            kid.span(),
            format!("signing key {name:?} is not among [[tokens.keys]]"),
        );
    }
    // Otherwise the key failed to load, and its own error is already reported.
    None
}

/// Loads `key` into `keyring`; a failure is reported at the value at fault,
/// else at the key's `kid`.
pub(super) fn add_key(key: &RawKey, base: &Path, keyring: &mut Keyring, sink: &mut Diagnostics) {
    if source_skipped(key, base, sink) {
        return;
    }
    if let Err((span, message)) = load_key(key, base, keyring) {
        sink.at(span.unwrap_or(key.kid.span()), message);
    }
}

/// Whether the key's one secret source is absent and `check --skip-files`
/// passes it over: the key is then not loaded, and a `signing_key` naming
/// it is not reported either (see [`signing_key`]).
fn source_skipped(key: &RawKey, base: &Path, sink: &Diagnostics) -> bool {
    let files = [
        &key.private_key_file,
        &key.public_key_file,
        &key.secret_file,
    ];
    let file_skipped = files
        .into_iter()
        .flatten()
        .any(|path| sink.skips_file(&base.join(path.get_ref())));
    let variable_skipped =
        (key.secret_env.as_ref()).is_some_and(|var| sink.skips_variable(var.get_ref()));
    file_skipped || variable_skipped
}

/// Where a key failed (`None`: the key as a whole), and why.
type KeyFailure = (Option<Range<usize>>, String);

fn load_key(key: &RawKey, base: &Path, keyring: &mut Keyring) -> Result<(), KeyFailure> {
    let sources = [
        key.private_key_file.as_ref().map(|p| p.span()),
        key.public_key_file.as_ref().map(|p| p.span()),
        key.secret_env.as_ref().map(|p| p.span()),
        key.secret_file.as_ref().map(|p| p.span()),
    ];
    if sources.iter().flatten().count() != 1 {
        let want = if key.algorithm == KeyAlgorithm::HS256 {
            "secret_env or secret_file"
        } else {
            "private_key_file or public_key_file"
        };
        return Err((
            None,
            format!("key {:?} needs exactly one of {want}", key.kid.get_ref()),
        ));
    }
    let (span, bytes, kind) = read_material(key, base)?;
    let material = match kind {
        Material::Private => KeyMaterial::PrivatePem(&bytes),
        Material::Public => KeyMaterial::PublicPem(&bytes),
        Material::Secret => KeyMaterial::Secret(&bytes),
    };
    keyring
        .add(key.kid.get_ref(), key.algorithm, material)
        .map_err(|e| {
            (
                Some(span),
                format!("key {:?} ({:?}): {e}", key.kid.get_ref(), key.algorithm),
            )
        })
}

/// Which kind of bytes `read_material` read, so that [`KeyMaterial`] can
/// borrow them afterwards.
enum Material {
    Private,
    Public,
    Secret,
}

/// The bytes of the key's one source, with the position of that source.
fn read_material(
    key: &RawKey,
    base: &Path,
) -> Result<(Range<usize>, Vec<u8>, Material), KeyFailure> {
    let read = |path: &Spanned<PathBuf>| {
        let full = base.join(path.get_ref());
        std::fs::read(&full).map_err(|e| (Some(path.span()), format!("{}: {e}", full.display())))
    };
    if let Some(path) = &key.private_key_file {
        warn_if_exposed(key.kid.get_ref(), &base.join(path.get_ref()));
        return Ok((path.span(), read(path)?, Material::Private));
    }
    if let Some(path) = &key.public_key_file {
        return Ok((path.span(), read(path)?, Material::Public));
    }
    if let Some(path) = &key.secret_file {
        warn_if_exposed(key.kid.get_ref(), &base.join(path.get_ref()));
        // The line end an editor adds is not part of the secret.
        let mut bytes = read(path)?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok((path.span(), bytes, Material::Secret));
    }
    let var = key
        .secret_env
        .as_ref()
        .ok_or((None, "no key material".to_owned()))?;
    let value = std::env::var_os(var.get_ref()).ok_or_else(|| {
        (
            Some(var.span()),
            format!("environment variable {} is not set", var.get_ref()),
        )
    })?;
    Ok((var.span(), value.into_encoded_bytes(), Material::Secret))
}

/// A signing key anyone could hold signs tokens anyone could forge: warn
/// when it is one of the repository's test fixtures or readable by users
/// other than the owner (`portcullis keygen` writes mode 0600).
fn warn_if_exposed(kid: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let names: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    let fixture = names
        .windows(2)
        .any(|w| w[0] == "tests" && w[1] == "fixtures");
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
    if fixture {
        tracing::warn!(kid, file = %path.display(), "signing key is a public test fixture: anyone can forge tokens with it; generate your own with `portcullis keygen`");
    } else if mode & 0o077 != 0 {
        tracing::warn!(kid, file = %path.display(), mode = format!("{:o}", mode & 0o777), "signing key is readable by other users: chmod 600 it");
    }
}
