//! Server host names are resolved by the control thread, never on a core: a
//! host that does not resolve leaves sleddog running and fails only the
//! logins that need it, with "could not resolve host"; `localhost` works.

mod common;

use common::proxy::sqlstate;
use common::{free_port, pg, Sleddog};

const USERS: &str = r#"
[[users]]
name = "sd_scram"
databases = ["by_name", "nowhere"]
password = "scram_pw"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn unresolvable_host_fails_at_login_and_localhost_works() {
    let port = free_port();
    // `.invalid` never resolves (RFC 6761).
    let config = format!(
        "[general]\nhost = \"127.0.0.1\"\nport = {port}\nworkers = 2\ndns_ttl = 1000\n\n\
         [[databases]]\nname = \"by_name\"\nhost = \"localhost\"\nport = {pg}\n\
         database_name = \"sleddog\"\n\n\
         [[databases]]\nname = \"nowhere\"\nhost = \"db.invalid\"\nport = {pg}\n",
        pg = pg().port()
    );
    let proxy = Sleddog::start(&config, USERS);

    let connect = |database: &'static str| async move {
        let conninfo = format!(
            "host=127.0.0.1 port={port} user=sd_scram password=scram_pw dbname={database} \
             connect_timeout=10"
        );
        let (client, connection) =
            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    };

    let Err(error) = connect("nowhere").await else {
        panic!("a login to an unresolvable server must fail");
    };
    assert_eq!(
        sqlstate(&error).as_deref(),
        Some("08006"),
        "{error}\n{}",
        proxy.log()
    );
    let message = error.as_db_error().unwrap().message().to_owned();
    // The internal host name stays out of what clients see; the log has it.
    assert!(
        message.contains("could not resolve the server's host name"),
        "{message}"
    );
    assert!(!message.contains("db.invalid"), "{message}");
    assert!(proxy.log().contains("db.invalid"), "{}", proxy.log());

    let client = connect("by_name")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let row = client.query_typed_one("select 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    // Periodic re-resolution (dns_ttl = 1 s) finds nothing new and
    // publishes nothing: the logged-in client keeps working.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let row = client.query_typed_one("select 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);

    let log = proxy.log();
    assert!(log.contains("could not resolve host"), "{log}");
    assert!(!log.contains("server addresses changed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // Still serving new clients.
    assert!(connect("by_name").await.is_ok());
}
