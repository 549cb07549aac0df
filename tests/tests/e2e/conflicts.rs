//! Concurrent edits while a device is offline: the remote version keeps the
//! name, the local one becomes a conflicted copy, both reach every device,
//! and the conflict can be resolved from the command line.

use coffer_e2e::{Client, Server};

#[test]
fn concurrent_edit_while_offline_makes_a_conflicted_copy() {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "bob@example.org");
    b.login(&server, "bob@example.org");
    a.write("report.docx", b"original");
    a.sync();
    b.sync();

    // B goes "offline" (does not sync) and edits; A edits and syncs.
    b.write("report.docx", b"B's edit made offline");
    a.write("report.docx", b"A's edit");
    a.sync();
    let out = b.sync().stdout;
    assert!(out.contains("1 conflicts"), "{out}");
    a.sync();

    for c in [&a, &b] {
        let tree = c.tree();
        assert_eq!(c.read("report.docx"), b"A's edit", "the remote (first) version keeps the name");
        let copy = tree
            .keys()
            .find(|k| k.starts_with("report (conflicted copy from ") && k.ends_with(".docx"))
            .unwrap_or_else(|| panic!("no conflicted copy in {tree:?}"))
            .clone();
        assert_eq!(c.read(&copy), b"B's edit made offline", "nothing is lost");
    }
    assert_eq!(a.tree(), b.tree());

    let listed = b.run(&["conflicts", "--dir", b.root.to_str().unwrap(), "--json"]).ok().stdout;
    assert!(listed.contains("report.docx"), "{listed}");

    // Keep mine on B: B's text takes the name back, everywhere.
    b.run(&["resolve", "report.docx", "--keep", "mine", "--dir", b.root.to_str().unwrap()]).ok();
    b.sync();
    a.sync();
    assert_eq!(a.read("report.docx"), b"B's edit made offline");
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.tree().len(), 1, "the copy is gone after keep-mine: {:?}", a.tree());
    let listed = b.run(&["conflicts", "--dir", b.root.to_str().unwrap(), "--json"]).ok().stdout;
    assert_eq!(listed.trim(), "[]");
}
