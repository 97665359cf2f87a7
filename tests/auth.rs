//! Client authentication per auth_type against real Postgres, and server-side
//! authentication with each method Postgres offers (SCRAM, md5, cleartext, trust).

mod common;

use common::proxy::{config, connect, sqlstate, try_connect, USERS};
use common::{free_port, pg, run_sleddog, Sleddog};

async fn current_user(port: u16, user: &str, password: &str) -> String {
    let client = connect(port, user, password).await;
    let row = client
        .query_typed_one("select current_user::text", &[])
        .await
        .unwrap();
    row.get(0)
}

/// Every role logs in through sleddog, and sleddog logs in to Postgres with that
/// role's server-side method (sd_scram: SCRAM, sd_md5: md5, sd_plain: cleartext,
/// sd_trust: trust).
#[tokio::test(flavor = "multi_thread")]
async fn scram_clients_and_every_server_method() {
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    for (user, password) in [
        ("sd_scram", "scram_pw"),
        ("sd_md5", "md5_pw"),
        ("sd_plain", "plain_pw"),
    ] {
        assert_eq!(
            current_user(port, user, password).await,
            user,
            "{}",
            proxy.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_get_the_same_error() {
    let port = free_port();
    let _proxy = Sleddog::start(&config(port, pg().port(), ""), USERS);
    let wrong = try_connect(port, "sd_scram", "nope").await.unwrap_err();
    let unknown = try_connect(port, "nobody", "nope").await.unwrap_err();
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"));
    let text = |e: &tokio_postgres::Error| e.as_db_error().unwrap().message().to_owned();
    assert_eq!(
        text(&wrong).replace("sd_scram", "X"),
        text(&unknown).replace("nobody", "X")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_plain_and_trust_auth_types() {
    for auth_type in ["md5", "plain", "trust"] {
        let port = free_port();
        let general = format!("auth_type = \"{auth_type}\"");
        let proxy = Sleddog::start(&config(port, pg().port(), &general), USERS);
        assert_eq!(
            current_user(port, "sd_scram", "scram_pw").await,
            "sd_scram",
            "{auth_type}: {}",
            proxy.log()
        );
        if auth_type != "trust" {
            let error = try_connect(port, "sd_scram", "wrong").await.unwrap_err();
            assert_eq!(sqlstate(&error).as_deref(), Some("28P01"), "{auth_type}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn password_hash_and_multiple_passwords() {
    let hashed = run_sleddog(&["hash", "hashed_secret"]);
    assert!(hashed.status.success());
    let verifier = String::from_utf8(hashed.stdout).unwrap().trim().to_owned();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    let users = format!(
        r#"
[[users]]
name = "sd_scram"
database = "sleddog"
password_hash = "{verifier}"
server_password = "scram_pw"

[[users]]
name = "sd_md5"
database = "sleddog"
passwords = ["first_pw", "second_pw"]
server_password = "md5_pw"
"#
    );
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), ""), &users);
    assert_eq!(
        current_user(port, "sd_scram", "hashed_secret").await,
        "sd_scram",
        "{}",
        proxy.log()
    );
    assert!(try_connect(port, "sd_scram", "scram_pw").await.is_err());
    for password in ["first_pw", "second_pw"] {
        assert_eq!(current_user(port, "sd_md5", password).await, "sd_md5");
    }
    assert!(try_connect(port, "sd_md5", "md5_pw").await.is_err());
}

/// auth_type = "plain" with only a password_hash: sleddog checks the cleartext
/// password against the verifier (PBKDF2 once, then from its per-core cache);
/// a wrong password is refused every time, before and after a good login.
#[tokio::test(flavor = "multi_thread")]
async fn plain_auth_against_a_password_hash() {
    let hashed = run_sleddog(&["hash", "plain_hashed"]);
    assert!(hashed.status.success());
    let verifier = String::from_utf8(hashed.stdout).unwrap().trim().to_owned();
    let users = format!(
        "[[users]]\nname = \"sd_scram\"\ndatabase = \"sleddog\"\n\
         password_hash = \"{verifier}\"\nserver_password = \"scram_pw\"\n"
    );
    let port = free_port();
    let proxy = Sleddog::start(&config(port, pg().port(), "auth_type = \"plain\""), &users);
    let wrong = try_connect(port, "sd_scram", "scram_pw").await.unwrap_err();
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    for _ in 0..3 {
        assert_eq!(
            current_user(port, "sd_scram", "plain_hashed").await,
            "sd_scram",
            "{}",
            proxy.log()
        );
        let wrong = try_connect(port, "sd_scram", "plain_hashed!")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    }
}
