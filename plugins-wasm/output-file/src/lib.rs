//! The log and stats filters write to a file named on the command line, which the host opens
//! for appending (a config key of kind `output-file`). nbdkit opens such a file with O_TRUNC
//! unless told to append; here every instance of a layer opens it, so the first one to get
//! ready empties it, once, and the others find out from a host counter.

use nbdbox_sdk::grants::{self, File};
use nbdbox_sdk::{error, Errno, Result};

/// The output file granted for `key`, emptied by the layer's first instance unless `append`.
pub fn open(key: &str, append: bool) -> Result<File> {
    let file = grants::open_file(key)?;
    if !append && once::first(&format!("{key} emptied")) {
        file.set_size(0)
            .map_err(|e| error(Errno::Eio, format!("{key}: cannot truncate: {e:?}")))?;
    }
    Ok(file)
}

/// Write `text` at the end of `file` in one write, so that lines appended by several
/// instances at once do not interleave.
pub fn append(file: &File, text: &str) {
    // Logging is best effort, as in nbdkit: a failed write loses the line, not the request.
    let _ = file.append(text.as_bytes());
}
