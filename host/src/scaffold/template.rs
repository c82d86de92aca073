//! The scaffold's templates: plain files with two kinds of markup, so each
//! reads as the language it is written in.
//!
//! - `{{key}}` is replaced by the key's value.
//! - A line `trellis:if A,B` (behind the language's comment: `//`, `#` or
//!   `<!--`) starts a block kept only when one of A, B is enabled (a grant,
//!   or `lang-rust` / `lang-js` / `lang-python`); a line `trellis:end`
//!   closes it. Marker lines never reach the output. Blocks do not nest.

/// What a marker line says.
enum Marker<'a> {
    If(&'a str),
    End,
}

fn marker(line: &str) -> Option<Marker<'_>> {
    let line = line.trim();
    let body = ["//", "#", "<!--"]
        .iter()
        .find_map(|open| line.strip_prefix(open))?;
    let body = body.trim().trim_end_matches("-->").trim();
    if body == "trellis:end" {
        return Some(Marker::End);
    }
    body.strip_prefix("trellis:if ").map(Marker::If)
}

/// Renders `template` for the `enabled` conditions and the `vars`.
pub(crate) fn render(template: &str, enabled: &[&str], vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut keep = true;
    for line in template.split_inclusive('\n') {
        match marker(line) {
            Some(Marker::If(conditions)) => {
                keep = conditions.split(',').any(|c| enabled.contains(&c.trim()));
            }
            Some(Marker::End) => keep = true,
            None if keep => out.push_str(line),
            None => {}
        }
    }
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_kept_for_their_conditions_and_markers_dropped() {
        let template = "a {{name}}\n// trellis:if sql\nsql\n// trellis:end\n# trellis:if log,cache\nlog or cache\n# trellis:end\n<!-- trellis:if lang-js -->\njs\n<!-- trellis:end -->\nz\n";
        assert_eq!(
            render(template, &["cache", "lang-js"], &[("name", "demo")]),
            "a demo\nlog or cache\njs\nz\n"
        );
        assert_eq!(render(template, &["sql"], &[]), "a {{name}}\nsql\nz\n");
    }
}
