//! The console over plain HTTP, as a browser's requests would reach it: a session cookie, the
//! page's CSRF token, form posts. For the checks a browser cannot make (forged requests,
//! expiry to the second, every response's bytes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;

use crate::percent_encoded;
use crate::proxy::{Http, HttpResponse};

pub struct ConsoleSession {
    http: Http,
    pub base: String,
    /// `sluice_console=…`, as the browser would send it back.
    pub cookie: String,
}

impl ConsoleSession {
    /// Signs in with `token`; panics unless the console accepts it.
    pub async fn sign_in(base: &str, token: &str) -> Self {
        let http = Http::new();
        let answer = post_form(&http, &format!("{base}/sign-in"), None, &[("token", token)]).await;
        assert_eq!(answer.status, 303, "sign-in refused: {}", answer.text());
        let set_cookie = answer
            .headers
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_owned();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        Self {
            http,
            base: base.to_owned(),
            cookie,
        }
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        self.http
            .send(
                "GET",
                &format!("{}{path}", self.base),
                None,
                &[("cookie", &self.cookie)],
                Bytes::new(),
            )
            .await
            .unwrap()
    }

    /// The CSRF token the page at `path` puts in its forms.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await.text();
        page.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no form on {path}: {page}"))
            .to_owned()
    }

    /// Posts `fields` as the form of a console page would (same origin).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        post_form(
            &self.http,
            &format!("{}{path}", self.base),
            Some(&self.cookie),
            fields,
        )
        .await
    }

    /// Posts with extra request headers (a forged origin, say).
    pub async fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        fields: &[(&str, &str)],
    ) -> HttpResponse {
        let mut all = vec![
            ("cookie", self.cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        all.extend_from_slice(headers);
        self.http
            .send(
                "POST",
                &format!("{}{path}", self.base),
                None,
                &all,
                Bytes::from(encode(fields)),
            )
            .await
            .unwrap()
    }
}

async fn post_form(
    http: &Http,
    url: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> HttpResponse {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    http.send("POST", url, None, &headers, Bytes::from(encode(fields)))
        .await
        .unwrap()
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encoded(name), percent_encoded(value)))
        .collect::<Vec<_>>()
        .join("&")
}
