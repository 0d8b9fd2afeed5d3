//! Command templates: `{}` and its GNU parallel variants, replaced per input.

/// The placeholders `troika run` replaces, as GNU parallel names them.
///
/// | placeholder | replaced by |
/// | --- | --- |
/// | `{}` | the input line |
/// | `{.}` | the input without its extension |
/// | `{/}` | the input's basename |
/// | `{//}` | the input's directory |
/// | `{/.}` | the basename without its extension |
/// | `{#}` | the job's sequence number, from 1 |
const PLACEHOLDERS: [&str; 6] = ["{}", "{.}", "{/}", "{//}", "{/.}", "{#}"];

/// Whether any argument holds a placeholder for the input.
pub(crate) fn mentions_input(args: &[String]) -> bool {
    args.iter()
        .any(|arg| PLACEHOLDERS[..5].iter().any(|p| arg.contains(p)))
}

/// Replace every placeholder in `template`.
pub(crate) fn expand(template: &str, input: &str, seq: u64) -> String {
    let mut out = String::with_capacity(template.len() + input.len());
    let mut rest = template;
    'scan: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        for placeholder in PLACEHOLDERS {
            if let Some(after) = tail.strip_prefix(placeholder) {
                match placeholder {
                    "{}" => out.push_str(input),
                    "{.}" => out.push_str(without_extension(input)),
                    "{/}" => out.push_str(basename(input)),
                    "{//}" => out.push_str(dirname(input)),
                    "{/.}" => out.push_str(without_extension(basename(input))),
                    _ => out.push_str(&seq.to_string()),
                }
                rest = after;
                continue 'scan;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None if trimmed.is_empty() && !path.is_empty() => "/",
        None => trimmed,
    }
}

fn dirname(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/",
        Some(i) => &trimmed[..i],
        None => ".",
    }
}

/// The input without the extension of its last component (`a/b.tar.gz` → `a/b.tar`).
fn without_extension(path: &str) -> &str {
    let start = path.rfind('/').map_or(0, |i| i + 1);
    match path[start..].rfind('.') {
        Some(dot) if dot > 0 => &path[..start + dot],
        _ => path,
    }
}

/// Quote `word` for a POSIX shell, for `--shell` commands.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_like_gnu_parallel() {
        assert_eq!(expand("{}", "dir/file.tar.gz", 3), "dir/file.tar.gz");
        assert_eq!(expand("{.}", "dir/file.tar.gz", 3), "dir/file.tar");
        assert_eq!(expand("{/}", "dir/file.tar.gz", 3), "file.tar.gz");
        assert_eq!(expand("{//}", "dir/file.tar.gz", 3), "dir");
        assert_eq!(expand("{/.}", "dir/file.tar.gz", 3), "file.tar");
        assert_eq!(expand("{#}", "x", 42), "42");
        assert_eq!(expand("out/{/.}-{#}.txt", "in/a.csv", 7), "out/a-7.txt");
        assert_eq!(expand("{.}", ".hidden", 1), ".hidden");
        assert_eq!(expand("{.}", "a.b/c", 1), "a.b/c");
        assert_eq!(expand("{//}", "file", 1), ".");
        assert_eq!(expand("{//}", "/file", 1), "/");
        assert_eq!(expand("{x} {", "in", 1), "{x} {");
    }

    #[test]
    fn input_mentions_are_found() {
        assert!(mentions_input(&["echo".into(), "a{}b".into()]));
        assert!(mentions_input(&["{/.}".into()]));
        assert!(!mentions_input(&["echo".into(), "{#}".into()]));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("plain-word.txt"), "plain-word.txt");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
