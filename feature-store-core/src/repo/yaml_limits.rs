//! Bounds on YAML input, checked before the parser sees it.
//!
//! The YAML scanner's time grows with the square of the nesting depth (each
//! token revisits every open flow level), so a file of 200,000 `[` kept
//! `apply` busy for minutes. Real definitions nest a handful of levels; a
//! linear pre-scan refuses anything deeper than [`MAX_DEPTH`] or larger than
//! [`MAX_BYTES`] in microseconds, with the line and column.

/// Largest YAML file read (definitions or `feature_store.yaml`).
pub const MAX_BYTES: usize = 16 << 20;

/// Deepest nesting accepted: block levels (indentation, `- ` items) plus
/// flow levels (`[`, `{`).
pub const MAX_DEPTH: usize = 64;

/// Checks `text` against [`MAX_BYTES`] and [`MAX_DEPTH`]; the error says
/// what was exceeded and where (1-based line and column).
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the file is {} bytes; YAML files are read up to {} MiB (is it generated, or not a definitions file?)",
            text.len(),
            MAX_BYTES >> 20
        ));
    }
    let too_deep = |line: usize, column: usize| {
        Err(format!(
            "nesting deeper than {MAX_DEPTH} levels at line {line}, column {column}; definitions nest a few levels \
             (is the file generated, or corrupt?)"
        ))
    };
    // Indentation of each open block level; open flow brackets.
    let mut blocks: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a block scalar (`|`, `>`): lines indented deeper than this are text.
    let mut scalar_indent: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.trim().is_empty() {
            continue;
        }
        if let Some(s) = scalar_indent {
            if indent > s {
                continue;
            }
            scalar_indent = None;
        }
        if rest.starts_with('#') {
            continue;
        }
        if flow == 0 {
            while blocks.last().is_some_and(|b| *b >= indent) {
                blocks.pop();
            }
            blocks.push(indent);
        }
        // `- - x` opens one block level per marker.
        let mut col = indent;
        let mut items = rest;
        while let Some(after) = items.strip_prefix("- ").or_else(|| (items == "-").then_some("")) {
            col += 2;
            blocks.push(col);
            items = after.trim_start_matches(' ');
        }
        if blocks.len() + flow > MAX_DEPTH {
            return too_deep(n + 1, col + 1);
        }
        // Flow brackets outside quotes and comments.
        let bytes = line.as_bytes();
        let mut i = indent;
        let mut prev = b' ';
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'#' if prev == b' ' || prev == b'\t' => break,
                b'\'' | b'"' if matches!(prev, b' ' | b'\t' | b':' | b'-' | b'[' | b'{' | b',') => {
                    // A quoted scalar: skip to its end on this line (a
                    // multi-line quoted scalar holds no brackets we count).
                    i += 1;
                    while i < bytes.len() {
                        let escaped = match c {
                            b'"' => bytes[i] == b'\\',
                            _ => bytes[i] == b'\'' && bytes.get(i + 1) == Some(&b'\''),
                        };
                        if escaped {
                            i += 2;
                            continue;
                        }
                        if bytes[i] == c {
                            break;
                        }
                        i += 1;
                    }
                }
                b'[' | b'{' => {
                    flow += 1;
                    if blocks.len() + flow > MAX_DEPTH {
                        return too_deep(n + 1, i + 1);
                    }
                }
                b']' | b'}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = c;
            i += 1;
        }
        // `key: |` or `key: >-` starts a block scalar on the next lines.
        let code = line.split(" #").next().unwrap_or(line).trim_end();
        if flow == 0
            && let Some(head) = code.rsplit_once(' ').map(|(_, h)| h).or(Some(code))
            && (head.starts_with('|') || head.starts_with('>'))
            && head[1..].chars().all(|c| matches!(c, '-' | '+' | '0'..='9'))
        {
            scalar_indent = Some(indent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_definitions_pass() {
        let yaml = r#"
entities:
  - {name: driver, join_keys: [driver_id]}   # [a comment with [brackets
feature_views:
  - name: stats
    description: |
      Text with [unbalanced brackets and { braces
      over two lines: [[[[
    tags: {team: "a [quoted] value", other: 'it''s [ fine'}
    schema:
      - {name: conv_rate, dtype: float32}
      - - nested
        - - deeper
"#;
        check(yaml).unwrap();
    }

    #[test]
    fn deep_flow_and_block_nesting_is_refused_with_its_place() {
        let deep = "a: ".to_owned() + &"[".repeat(200_000);
        let started = std::time::Instant::now();
        let e = check(&deep).unwrap_err();
        assert!(started.elapsed().as_millis() < 500, "a linear scan");
        assert!(e.contains("nesting deeper than 64 levels at line 1, column 67"), "{e}");
        let fine = "a: ".to_owned() + &"[".repeat(60) + &"]".repeat(60);
        check(&fine).unwrap();
        let mut block = String::new();
        for level in 0..70 {
            block.push_str(&" ".repeat(level * 2));
            block.push_str("k:\n");
        }
        let e = check(&block).unwrap_err();
        assert!(e.contains("at line 65"), "{e}");
        let items = "x: ".to_owned() + &"- ".repeat(70) + "v";
        check(&items).unwrap(); // not a sequence there: plain text after `x: `
        let items = "- ".repeat(70) + "v";
        assert!(check(&items).unwrap_err().contains("line 1"));
    }

    #[test]
    fn huge_files_are_refused() {
        let big = "#".repeat(MAX_BYTES + 1);
        assert!(check(&big).unwrap_err().contains("YAML files are read up to 16 MiB"));
    }
}
