//! Errors about what the user wrote, with a location: `file:line:col`, the offending line and carets.
//!
//! ```text
//! error: unknown parameter `componets` for kind `pca`
//!   --> pipelines/x.toml:12:1
//!    |
//! 12 | componets = 16
//!    | ^^^^^^^^^
//!    = help: known parameters: components, dimension_limit, variance_threshold
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A source file as the user named it, kept whole so errors can quote it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: Arc<str>,
}

/// One error about user input. `span` is a byte range into `source`'s text.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<(Source, Range<usize>)>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), location: None, help: None }
    }
    pub fn at(message: impl Into<String>, source: &Source, span: Range<usize>) -> Self {
        Diagnostic { message: message.into(), location: Some((source.clone(), span)), help: None }
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The help of an error that names no stage: `stages: a, b, c`.
pub fn stages_help<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    format!("stages: {}", names.into_iter().collect::<Vec<_>>().join(", "))
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some((src, span)) = &self.location {
            let text = &*src.text;
            let start = span.start.min(text.len());
            let (line, col) = line_col(text, start);
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let line_text = text[line_start..line_end].trim_end_matches('\r');
            // Carets cover the span, clipped to the first line.
            let end = span.end.clamp(start, line_end.max(start));
            let width = text[start..end].chars().count().max(1);
            let gutter = line.to_string().len();
            let pad = " ".repeat(gutter);
            write!(f, "\n{pad}--> {}:{line}:{col}", src.name)?;
            write!(f, "\n{pad} |")?;
            write!(f, "\n{line} | {line_text}")?;
            write!(f, "\n{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width))?;
            if let Some(help) = &self.help {
                write!(f, "\n{pad} = help: {help}")?;
            }
        } else if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// Every error found while checking a pipeline: all are reported, not just the first.
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gutter_and_carets_on_the_offending_text() {
        let src = Source { name: "p.toml".into(), text: "[a]\nkind = \"x\"\ncomponets = 16\n".into() };
        let at = src.text.find("componets").unwrap();
        let d = Diagnostic::at("unknown parameter `componets`", &src, at..at + 9).with_help("known: components");
        assert_eq!(
            d.to_string(),
            "error: unknown parameter `componets`\n --> p.toml:3:1\n  |\n3 | componets = 16\n  | ^^^^^^^^^\n  = help: known: components"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncé=x", 6), (2, 3));
    }
}
