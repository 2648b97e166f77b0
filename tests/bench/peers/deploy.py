# The workload of tests/data/web.yml for pyinfra: the same ten steps and
# handler. `base` and `greeting` come from the benchmark (--data).
from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

base = f"{host.data.base}/{host.name}"
greeting = host.data.get("greeting", "hello")

files.directory(name="root", path=base, mode="755")
files.directory(name="conf", path=f"{base}/conf")
files.directory(name="data", path=f"{base}/data")
files.put(name="motd", src=StringIO(f"{greeting} {host.name}\n"), dest=f"{base}/conf/motd", mode="644")
conf = files.template(name="app-conf", src="app.conf.pyinfra.j2", dest=f"{base}/conf/app.conf", mode="600")
files.line(name="hosts-line", path=f"{base}/conf/hosts", line=f"{host.data.ssh_hostname} {host.name}")
files.line(name="limits", path=f"{base}/conf/limits", line="nofile 65536")
server.shell(
    name="init",
    commands=[f"test -e {base}/data/.init || {{ echo init >> {base}/runs; touch {base}/data/.init; }}"],
)
server.shell(name="slow", commands=[f"sleep 0; echo slow >> {base}/runs"])
files.put(name="done", src=StringIO("ok\n"), dest=f"{base}/done")
server.shell(name="restart", commands=[f"echo restart >> {base}/runs"], _if=conf.did_change)
