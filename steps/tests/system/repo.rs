//! A real, signed apt repository on disk for the apt tests: tiny packages
//! built with `dpkg-deb`, a flat `Packages` index, a `Release` file signed
//! into `InRelease` with a throwaway gpg key. Hosts reach it as a `file:` URI,
//! so nothing leaves the machine. Needs `gpg` (Debian package `gnupg`).

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Repo {
    pub dir: PathBuf,
    gnupg: PathBuf,
    /// The signing key, ASCII-armored.
    pub key: String,
    packages: Vec<(String, String)>,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Repo {
    /// An empty repository in `dir` (which the hosts must see: use the host's own directory).
    pub fn new(dir: &Path) -> Self {
        assert!(
            Command::new("gpg").arg("--version").output().is_ok(),
            "the apt tests sign a repository with gpg: install the Debian package `gnupg`"
        );
        let gnupg = dir.join("gnupg");
        std::fs::create_dir_all(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.arg("--homedir").arg(&gnupg).args(["--batch", "--quiet"]).args(args);
            run(&mut c)
        };
        gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "flowrun lab repo <repo@flowrun.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        let key = String::from_utf8(gpg(&["--armor", "--export"])).unwrap();
        Self {
            dir: repo,
            gnupg,
            key,
            packages: Vec::new(),
        }
    }

    pub fn uri(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    /// Build package `name` at `version` (it installs `/usr/share/NAME/version`) and re-sign the index.
    pub fn add(&mut self, name: &str, version: &str) {
        let root = self.dir.join(format!("build-{name}-{version}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(root.join("usr/share").join(name)).unwrap();
        std::fs::write(
            root.join("usr/share").join(name).join("version"),
            format!("{version}\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: flowrun tests <tests@flowrun.invalid>\n\
                 Description: a package for flowrun's apt tests\n"
            ),
        )
        .unwrap();
        let deb = format!("{name}_{version}_all.deb");
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(self.dir.join(&deb)));
        std::fs::remove_dir_all(&root).unwrap();
        self.packages.push((name.to_owned(), version.to_owned()));
        self.index();
    }

    fn index(&self) {
        let mut packages = String::new();
        for (name, version) in &self.packages {
            let deb = format!("{name}_{version}_all.deb");
            let bytes = std::fs::read(self.dir.join(&deb)).unwrap();
            let control = run(Command::new("dpkg-deb").arg("-f").arg(self.dir.join(&deb)));
            packages.push_str(String::from_utf8_lossy(&control).trim_end());
            let _ = write!(
                packages,
                "\nFilename: ./{deb}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                hex(&bytes)
            );
        }
        std::fs::write(self.dir.join("Packages"), &packages).unwrap();
        let date = run(Command::new("date")
            .env("LC_ALL", "C")
            .args(["-u", "+%a, %d %b %Y %H:%M:%S UTC"]));
        let release = format!(
            "Origin: flowrun-lab\nLabel: flowrun-lab\nSuite: flowrun-lab\nCodename: flowrun-lab\nDate: {}\nSHA256:\n {} {} Packages\n",
            String::from_utf8_lossy(&date).trim(),
            hex(packages.as_bytes()),
            packages.len()
        );
        std::fs::write(self.dir.join("Release"), release).unwrap();
        let _ = std::fs::remove_file(self.dir.join("InRelease"));
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&self.gnupg)
            .args(["--batch", "--quiet", "--yes", "--clearsign", "-o"])
            .arg(self.dir.join("InRelease"))
            .arg(self.dir.join("Release")));
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        // gpg started an agent for this home: stop it.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.gnupg)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
