//! HTML built so that nothing dynamic can reach a page unescaped: every value written through
//! [`html!`] goes through [`Render`], which escapes text and passes through only [`Markup`] —
//! markup this module or a page built from constants and escaped values. Names are hostile
//! input (an organisation called `<script>` must render as text).

use std::fmt::{self, Write};

/// Markup already safe to place in a page.
#[derive(Debug, Default, Clone)]
pub struct Markup(String);

impl Markup {
    pub fn new() -> Self {
        Self(String::new())
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Appends `args` formatted; use [`html!`], which escapes every argument.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) {
        // Writing to a String never fails.
        let _ = self.0.write_fmt(args);
    }

    pub fn push(&mut self, markup: &Markup) {
        self.0.push_str(&markup.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a value is written into markup.
pub trait Render {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result;
}

/// Adapts a [`Render`] to `format_args!`.
pub struct Rendered<'a, T: ?Sized>(pub &'a T);

impl<T: Render + ?Sized> fmt::Display for Rendered<'_, T> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(out)
    }
}

impl Render for Markup {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.0)
    }
}

impl Render for str {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(self, out)
    }
}

impl Render for String {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(self, out)
    }
}

impl<T: Render + ?Sized> Render for &T {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).render(out)
    }
}

macro_rules! render_display {
    ($($type:ty),+) => {
        $(impl Render for $type {
            fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, out)
            }
        })+
    };
}

render_display!(u16, u32, u64, usize, i32, i64, f64);

/// Escapes for text and for quoted attribute values alike.
fn escape(text: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(['<', '>', '&', '"', '\'']) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            _ => "&#39;",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}

/// Appends to a [`Markup`]: the format string is trusted markup, every argument is escaped
/// unless it is itself [`Markup`].
macro_rules! html {
    ($out:expr, $template:literal $(, $arg:expr)* $(,)?) => {
        $out.write_fmt(format_args!($template $(, $crate::console::html::Rendered(&$arg))*))
    };
}

pub(crate) use html;

/// A fragment built with [`html!`], returned as one value.
macro_rules! markup {
    ($template:literal $(, $arg:expr)* $(,)?) => {{
        let mut out = $crate::console::html::Markup::new();
        $crate::console::html::html!(out, $template $(, $arg)*);
        out
    }};
}

pub(crate) use markup;

/// Micro-dollars as dollars, with as many decimals as a cent-fraction needs.
pub fn dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let micros = micros.unsigned_abs();
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction.is_multiple_of(10_000) {
        format!("{sign}${whole}.{:02}", fraction / 10_000)
    } else {
        format!("{sign}${whole}.{fraction:06}")
    }
}

/// A UTC time in microseconds as `YYYY-MM-DD HH:MM:SS UTC`; 0 as "never".
pub fn utc(at_us: i64) -> String {
    if at_us <= 0 {
        return "never".into();
    }
    sluice_shared::time::rfc3339(at_us)
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_is_escaped_but_markup() {
        let hostile = "<script>alert('x')</script>&\"";
        let inner = markup!("<b>{}</b>", hostile);
        let page = markup!("<p title=\"{}\">{}{}</p>", hostile, inner, 42u64);
        assert_eq!(
            page.into_string(),
            "<p title=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\">\
             <b>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;</b>42</p>"
        );
    }

    #[test]
    fn money_and_time() {
        assert_eq!(dollars(1_500_000), "$1.50");
        assert_eq!(dollars(1_234), "$0.001234");
        assert_eq!(dollars(-20_000), "-$0.02");
        assert_eq!(utc(0), "never");
        assert_eq!(utc(1_700_000_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
