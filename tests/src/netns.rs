//! Hosts that share nothing but a network, on one machine: each host is a network namespace
//! with one veth link into a bridge that lives in a namespace of its own. The test process
//! joins the bridge too, as an operator's machine would. Needs root (`ip netns`).

use std::process::Command;

use crate::servers::Place;

/// The hosts, removed (namespaces, links) when dropped.
pub struct Network {
    tag: String,
    subnet: String,
    hosts: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// `hosts` hosts on one /24, or why they cannot be made here (not root, no iproute2).
    pub fn new(hosts: usize) -> Result<Self, String> {
        let pid = std::process::id();
        let net = Self {
            // Interface names must stay under 16 bytes.
            tag: format!("xc{:05}", pid % 100_000),
            subnet: format!("10.{}.{}", 100 + pid % 100, (pid / 100) % 250),
            hosts,
        };
        // Built in place: a failure half-way is cleaned up by the drop.
        net.build(hosts)?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn netns(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    fn build(&self, hosts: usize) -> Result<(), String> {
        let br = self.bridge();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let (ns, inner, outer) = (
                self.netns(i),
                format!("{}v{i}", self.tag),
                format!("{}b{i}", self.tag),
            );
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &br])?;
            ip(&["-n", &br, "link", "set", &outer, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.address(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (mine, outer) = (format!("{}r", self.tag), format!("{}rb", self.tag));
        ip(&["link", "add", &mine, "type", "veth", "peer", "name", &outer])?;
        ip(&["link", "set", &outer, "netns", &br])?;
        ip(&["-n", &br, "link", "set", &outer, "master", "br0", "up"])?;
        let addr = format!("{}.254/24", self.subnet);
        ip(&["addr", "add", &addr, "dev", &mine])?;
        ip(&["link", "set", &mine, "up"])
    }

    /// Host `i`'s address.
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Where to start a process on host `i`.
    pub fn place(&self, i: usize) -> Place {
        Place {
            netns: Some(self.netns(i)),
            ip: self.address(i),
        }
    }

    /// Unplugs host `i`'s cable: its link to the bridge goes down.
    pub fn cut(&self, i: usize) {
        let outer = format!("{}b{i}", self.tag);
        ip(&["-n", &self.bridge(), "link", "set", &outer, "down"]).expect("cut the link");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it; the test's own end goes with its peer.
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.netns(i)]);
        }
        let _ = ip(&["netns", "del", &self.bridge()]);
        let _ = ip(&["link", "del", &format!("{}r", self.tag)]);
    }
}
