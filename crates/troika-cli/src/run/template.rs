//! Command templates: `{}` and its GNU parallel variants, replaced per input.
//! Inputs are bytes: a file name that is not UTF-8 passes through unchanged.
//!
//! | placeholder | replaced by |
//! | --- | --- |
//! | `{}` | the input (with several input sources: their values, space-separated) |
//! | `{.}` | the input without its extension |
//! | `{/}` | the input's basename |
//! | `{//}` | the input's directory |
//! | `{/.}` | the basename without its extension |
//! | `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` | the same, of the Nth input source |
//! | `{#}` | the job's sequence number, from 1 |

/// What a placeholder takes from its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    NoExtension,
    Basename,
    Dirname,
    BasenameNoExtension,
}

/// A placeholder found at the start of a slice: (source, part, its length).
/// `source` 0 means all sources; `None` for `{#}`.
fn placeholder(text: &[u8]) -> Option<(Option<(usize, Part)>, usize)> {
    let body_end = text.iter().position(|&b| b == b'}')?;
    let body = &text[1..body_end];
    if body == b"#" {
        return Some((None, body_end + 1));
    }
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let source = if digits == 0 {
        0
    } else {
        let n: usize = std::str::from_utf8(&body[..digits]).ok()?.parse().ok()?;
        if n == 0 {
            return None;
        }
        n
    };
    let part = match &body[digits..] {
        b"" => Part::Whole,
        b"." => Part::NoExtension,
        b"/" => Part::Basename,
        b"//" => Part::Dirname,
        b"/." => Part::BasenameNoExtension,
        _ => return None,
    };
    Some((Some((source, part)), body_end + 1))
}

/// Whether any argument holds a placeholder (`{#}` too): then the input is
/// not appended.
pub(crate) fn mentions_input(args: &[Vec<u8>]) -> bool {
    args.iter().any(|arg| {
        arg.iter()
            .enumerate()
            .any(|(i, &b)| b == b'{' && placeholder(&arg[i..]).is_some())
    })
}

/// Replace every placeholder in `template`; `quote` is applied to each value
/// put in (shell quoting for `--shell`). A `{N}` past the number of sources
/// stays as written.
pub(crate) fn expand(
    template: &[u8],
    inputs: &[Vec<u8>],
    seq: u64,
    quote: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + 16);
    let mut i = 0;
    while i < template.len() {
        if template[i] == b'{'
            && let Some((what, len)) = placeholder(&template[i..])
        {
            match what {
                None => out.extend_from_slice(seq.to_string().as_bytes()),
                Some((0, part)) => {
                    let joined = inputs
                        .iter()
                        .map(|input| quote(apply(part, input)))
                        .collect::<Vec<_>>()
                        .join(&b' ');
                    out.extend(joined);
                }
                Some((n, part)) => match inputs.get(n - 1) {
                    Some(input) => out.extend(quote(apply(part, input))),
                    None => out.extend_from_slice(&template[i..i + len]),
                },
            }
            i += len;
        } else {
            out.push(template[i]);
            i += 1;
        }
    }
    out
}

fn apply(part: Part, input: &[u8]) -> &[u8] {
    match part {
        Part::Whole => input,
        Part::NoExtension => without_extension(input),
        Part::Basename => basename(input),
        Part::Dirname => dirname(input),
        Part::BasenameNoExtension => without_extension(basename(input)),
    }
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &path[..end]
}

fn basename(path: &[u8]) -> &[u8] {
    let trimmed = trim_slashes(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None if trimmed.is_empty() && !path.is_empty() => b"/",
        None => trimmed,
    }
}

fn dirname(path: &[u8]) -> &[u8] {
    let trimmed = trim_slashes(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &trimmed[..i],
        None => b".",
    }
}

/// The input without the extension of its last component (`a/b.tar.gz` → `a/b.tar`).
fn without_extension(path: &[u8]) -> &[u8] {
    let start = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    match path[start..].iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &path[..start + dot],
        _ => path,
    }
}

/// Quote `word` for a POSIX shell (`--shell` commands, `--dry-run`, the job log).
pub(crate) fn shell_quote(word: &[u8]) -> Vec<u8> {
    if !word.is_empty()
        && word
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return word.to_vec();
    }
    let mut out = Vec::with_capacity(word.len() + 2);
    out.push(b'\'');
    for &b in word {
        if b == b'\'' {
            out.extend_from_slice(br"'\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// No quoting: the value as it is.
pub(crate) fn verbatim(word: &[u8]) -> Vec<u8> {
    word.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(template: &str, input: &str, seq: u64) -> String {
        let out = expand(
            template.as_bytes(),
            &[input.as_bytes().to_vec()],
            seq,
            &verbatim,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn placeholders_expand_like_gnu_parallel() {
        assert_eq!(ex("{}", "dir/file.tar.gz", 3), "dir/file.tar.gz");
        assert_eq!(ex("{.}", "dir/file.tar.gz", 3), "dir/file.tar");
        assert_eq!(ex("{/}", "dir/file.tar.gz", 3), "file.tar.gz");
        assert_eq!(ex("{//}", "dir/file.tar.gz", 3), "dir");
        assert_eq!(ex("{/.}", "dir/file.tar.gz", 3), "file.tar");
        assert_eq!(ex("{#}", "x", 42), "42");
        assert_eq!(ex("out/{/.}-{#}.txt", "in/a.csv", 7), "out/a-7.txt");
        assert_eq!(ex("{.}", ".hidden", 1), ".hidden");
        assert_eq!(ex("{.}", "a.b/c", 1), "a.b/c");
        assert_eq!(ex("{//}", "file", 1), ".");
        assert_eq!(ex("{//}", "/file", 1), "/");
        assert_eq!(ex("{x} {", "in", 1), "{x} {");
        assert_eq!(ex("{1/.} {2}", "d/a.txt", 1), "a {2}");
    }

    #[test]
    fn several_sources_fill_numbered_placeholders() {
        let inputs = [b"a b".to_vec(), b"x/y.z".to_vec()];
        let out = expand(b"{2.}:{1}:{}", &inputs, 1, &shell_quote);
        assert_eq!(out, b"x/y:'a b':'a b' x/y.z");
    }

    #[test]
    fn input_mentions_are_found() {
        assert!(mentions_input(&[b"echo".to_vec(), b"a{}b".to_vec()]));
        assert!(mentions_input(&[b"{/.}".to_vec()]));
        assert!(mentions_input(&[b"{2}".to_vec()]));
        assert!(mentions_input(&[b"echo".to_vec(), b"{#}".to_vec()]));
        assert!(!mentions_input(&[b"echo".to_vec(), b"{x}".to_vec()]));
    }

    #[test]
    fn shell_quoting_survives_quotes_and_bytes() {
        assert_eq!(shell_quote(b"plain-word.txt"), b"plain-word.txt");
        assert_eq!(shell_quote(b"two words"), b"'two words'");
        assert_eq!(shell_quote(b"it's"), br"'it'\''s'");
        assert_eq!(shell_quote(b""), b"''");
        assert_eq!(shell_quote(b"caf\xe9"), b"'caf\xe9'");
    }
}
