"""sigproxy.config: TOML -> validated dataclasses; every error names its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigproxy.config import (
    DEFAULT_LISTEN,
    Address,
    Config,
    ConnectionConfig,
    CredentialsConfig,
    ProxyConfig,
    ReverseListener,
    Route,
    Secret,
    config_search_path,
    find_config,
    load,
    loads,
    parse_address,
    parse_size,
)
from sigproxy.controlconfig import ConnectConfig
from sigproxy.errors import ConfigError
from sigproxy.hostglobs import host_matches

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"
TOKEN = "proxy-password-123"
ENV = {"MAIN_KEY_ID": "AKIDEXAMPLE", "MAIN_SESSION_TOKEN": SESSION, "SIGPROXY_MAIN_TOKEN": TOKEN}

FULL = """
[proxy]
listen = "127.0.0.1:8081"
default_connection = "main"
max_buffered_body = "16MiB"
connect_timeout = 5
read_timeout = 60.5
upstream_connections = 32

[connections.main]
region = "us-east-1"
service = "s3"
hosts = ["*.amazonaws.com", "127.0.0.1:*"]
token = "${env:SIGPROXY_MAIN_TOKEN}"
sts_endpoint_url = "http://127.0.0.1:5000/"
upstream_scheme = "https"
[connections.main.credentials]
source = "static"
access_key_id = "${env:MAIN_KEY_ID}"
secret_access_key = "${file:SECRET_FILE}"
session_token = "${env:MAIN_SESSION_TOKEN}"

[connections.search]
hosts = ["*.es.amazonaws.com"]
[connections.search.credentials]
source = "chain"
profile = "search-profile"

[[routes]]
host = "*.es.amazonaws.com"
connection = "search"

[[reverse]]
listen = "127.0.0.1:9200"
upstream = "https://search-x.eu-west-1.es.amazonaws.com/"
connection = "search"

[[reverse]]
listen = "[::1]:9201"
upstream = "http://127.0.0.1:5000"
"""

MINIMAL = """
[connections.main]
hosts = ["*.amazonaws.com"]
[connections.main.credentials]
source = "static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"
"""


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "main_secret"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


@pytest.fixture
def full(secret_file: Path) -> Config:
    return loads(FULL.replace("SECRET_FILE", str(secret_file)), env=ENV)


def error(text: str, **kwargs: object) -> ConfigError:
    """The ConfigError that loading ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        loads(text, env=kwargs.pop("env", {}), **kwargs)  # type: ignore[arg-type]
    return info.value


def minimal_with(extra: str) -> str:
    return MINIMAL + extra


class TestFullConfig:
    def test_proxy_section(self, full: Config) -> None:
        """[proxy] keys parse into ProxyConfig with sizes in bytes and timeouts as floats."""
        assert full.proxy == ProxyConfig(
            listen=Address("127.0.0.1", 8081),
            default_connection="main",
            max_buffered_body=16 * 2**20,
            connect_timeout=5.0,
            read_timeout=60.5,
            upstream_connections=32,
        )

    def test_static_connection(self, full: Config, secret_file: Path) -> None:
        """A static connection resolves env and file references; the file's trailing newline is dropped."""
        assert full.connections["main"] == ConnectionConfig(
            name="main",
            credentials=CredentialsConfig(
                source="static",
                access_key_id="AKIDEXAMPLE",
                secret_access_key=Secret(SECRET),
                session_token=Secret(SESSION),
            ),
            region="us-east-1",
            service="s3",
            hosts=("*.amazonaws.com", "127.0.0.1:*"),
            token=Secret(TOKEN),
            sts_endpoint_url="http://127.0.0.1:5000",
            upstream_scheme="https",
        )
        creds = full.connections["main"].credentials
        assert creds.secret_access_key is not None
        assert creds.secret_access_key.reveal() == SECRET

    def test_chain_connection(self, full: Config) -> None:
        """A chain connection keeps its profile and has no static keys."""
        search = full.connections["search"]
        assert search.credentials == CredentialsConfig(source="chain", profile="search-profile")
        assert search.region is None
        assert search.token is None

    def test_routes_and_reverse(self, full: Config) -> None:
        """[[routes]] and [[reverse]] become tuples of Route and ReverseListener, in file order."""
        assert full.routes == (Route(host="*.es.amazonaws.com", connection="search"),)
        assert full.reverse == (
            ReverseListener(
                listen=Address("127.0.0.1", 9200),
                upstream="https://search-x.eu-west-1.es.amazonaws.com",
                connection="search",
            ),
            ReverseListener(listen=Address("::1", 9201), upstream="http://127.0.0.1:5000"),
        )

    def test_defaults(self) -> None:
        """Without [proxy] the defaults apply: 127.0.0.1:8080, 8 MiB buffer, no default connection."""
        config = loads(MINIMAL, env={})
        assert config.proxy == ProxyConfig()
        assert str(config.proxy.listen) == DEFAULT_LISTEN
        assert config.proxy.max_buffered_body == 8 * 2**20
        assert config.proxy.default_connection is None
        assert config.routes == ()
        assert config.reverse == ()

    def test_reference_inside_a_string(self) -> None:
        """A reference may be part of a longer string; only the reference is replaced."""
        text = MINIMAL.replace('"AKIDEXAMPLE"', '"AKID-${env:SUFFIX}-X"')
        config = loads(text, env={"SUFFIX": "abc"})
        assert config.connections["main"].credentials.access_key_id == "AKID-abc-X"

    def test_env_parameter_replaces_os_environ(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With ``env=`` given, os.environ is not consulted."""
        monkeypatch.setenv("ONLY_IN_OS_ENVIRON", "x")
        text = MINIMAL.replace('"AKIDEXAMPLE"', '"${env:ONLY_IN_OS_ENVIRON}"')
        assert error(text, env={}).path == "connections.main.credentials.access_key_id"

    def test_load_reads_a_file(self, tmp_path: Path) -> None:
        """load() parses a file and records its path as the source."""
        path = tmp_path / "sigproxy.toml"
        path.write_text(MINIMAL, encoding="utf-8")
        config = load(path, env={})
        assert config.source == str(path)
        assert list(config.connections) == ["main"]

    def test_load_missing_file(self, tmp_path: Path) -> None:
        """A config file that cannot be read is a ConfigError naming the file."""
        with pytest.raises(ConfigError, match="cannot read config"):
            load(tmp_path / "nope.toml", env={})


class TestSecrets:
    def test_secret_repr(self) -> None:
        """Secret hides its value in repr and str; reveal() returns it."""
        secret = Secret(SECRET)
        assert SECRET not in repr(secret)
        assert SECRET not in str(secret)
        assert f"{secret}" == "Secret('***')"
        assert secret.reveal() == SECRET

    def test_config_repr_hides_secrets(self, full: Config) -> None:
        """Neither the secret key, the session token nor the proxy token appears in repr/str of Config."""
        for text in (repr(full), str(full)):
            for value in (SECRET, SESSION, TOKEN):
                assert value not in text
        assert "AKIDEXAMPLE" in repr(full)  # the key id is not a secret

    def test_connection_repr_hides_secrets(self, full: Config) -> None:
        """repr/str of a ConnectionConfig and its credentials show no secret value."""
        conn = full.connections["main"]
        for text in (repr(conn), str(conn), repr(conn.credentials)):
            for value in (SECRET, SESSION, TOKEN):
                assert value not in text


class TestReferences:
    def test_missing_env(self) -> None:
        """An unset ${env:NAME} names the key and the variable."""
        exc = error(MINIMAL.replace('"AKIDEXAMPLE"', '"${env:NOT_SET_ANYWHERE}"'))
        assert exc.path == "connections.main.credentials.access_key_id"
        assert "NOT_SET_ANYWHERE" in str(exc)

    def test_missing_file(self, tmp_path: Path) -> None:
        """An unreadable ${file:PATH} names the key and the file."""
        missing = tmp_path / "no-such-secret"
        exc = error(MINIMAL.replace('"secret"', f'"${{file:{missing}}}"'))
        assert exc.path == "connections.main.credentials.secret_access_key"
        assert str(missing) in str(exc)

    def test_empty_secret(self, tmp_path: Path) -> None:
        """A secret that resolves to the empty string is refused."""
        empty = tmp_path / "empty"
        empty.write_text("\n", encoding="utf-8")
        exc = error(MINIMAL.replace('"secret"', f'"${{file:{empty}}}"'))
        assert exc.path == "connections.main.credentials.secret_access_key"
        assert "empty" in exc.problem


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("text", "path"),
        [
            ("bogus = 1\n" + MINIMAL, "bogus"),
            ('[proxy]\nlisen = "127.0.0.1:1"\n' + MINIMAL, "proxy.lisen"),
            (MINIMAL.replace('hosts = ["*.amazonaws.com"]', 'hosts = ["*.amazonaws.com"]\nregoin = "x"'),
             "connections.main.regoin"),
            (MINIMAL + 'secret = "x"\n', "connections.main.credentials.secret"),
            (minimal_with('[[routes]]\nhost = "x.example.com"\nconnection = "main"\nextra = 1\n'),
             "routes[0].extra"),
            (minimal_with('[[reverse]]\nlisten = "127.0.0.1:9"\nupstream = "http://x"\nport = 1\n'),
             "reverse[0].port"),
        ],
        ids=["top-level", "proxy", "connection", "credentials", "routes", "reverse"],
    )
    def test_unknown_key(self, text: str, path: str) -> None:
        """An unknown key anywhere is an error naming its full key path (and a known key when one is close)."""
        exc = error(text)
        assert exc.path == path
        assert exc.problem.startswith("unknown key")
        assert str(exc).startswith(f"{path}: unknown key")


STRAY = [
    # (text, the stray key's path, the key it was meant to be)
    ("conections = 1\n" + MINIMAL, "conections", "connections"),
    ('[proxy]\nlisen = "127.0.0.1:1"\n' + MINIMAL, "proxy.lisen", "listen"),
    ('[proxy]\ndefault_conection = "main"\n' + MINIMAL, "proxy.default_conection", "default_connection"),
    (MINIMAL.replace("hosts =", "hots ="), "connections.main.hots", "hosts"),
    (MINIMAL.replace('hosts = ["*.amazonaws.com"]', 'hosts = ["*.amazonaws.com"]\nregoin = "x"'),
     "connections.main.regoin", "region"),
    (MINIMAL.replace("[connections.main.credentials]", "[connections.main.credentails]"),
     "connections.main.credentails", "credentials"),
    (MINIMAL.replace("source =", "sorce ="), "connections.main.credentials.sorce", "source"),
    (MINIMAL.replace("access_key_id", "acces_key_id"), "connections.main.credentials.acces_key_id",
     "access_key_id"),
    (MINIMAL.replace('secret_access_key = "secret"', 'secret_access_key = "secret"\nsesion_token = "t"'),
     "connections.main.credentials.sesion_token", "session_token"),
    (MINIMAL.replace('source = "static"\naccess_key_id = "AKIDEXAMPLE"\nsecret_access_key = "secret"',
                     'source = "web_identity"\nrole_arn = "arn:aws:iam::111122223333:role/r"\ntoken_fil = "/t"'),
     "connections.main.credentials.token_fil", "token_file"),
    (minimal_with('[[routes]]\nhots = "x.example.com"\nconnection = "main"\n'), "routes[0].hots", "host"),
    (minimal_with('[[reverse]]\nlisten = "127.0.0.1:9"\nupstrem = "http://x"\n'), "reverse[0].upstrem",
     "upstream"),
    (minimal_with('[[reverse]]\nlisten = "127.0.0.1:9"\nupstream = "http://x"\nclient = ["10.0.0.0/8"]\n'),
     "reverse[0].client", "clients"),
    (minimal_with('[store]\nmigrat = true\n'), "store.migrat", "migrate"),
    (minimal_with('[admin]\ntokn = "x"\n'), "admin.tokn", "token"),
    (minimal_with('[onboarding]\nprincipl = "111122223333"\n'), "onboarding.principl", "principal"),
    (minimal_with('[connect]\nsession_tl = 60\n'), "connect.session_tl", "session_ttl"),
]


class TestStrayKeys:
    @pytest.mark.parametrize(("text", "path", "meant"), STRAY, ids=[p for _, p, _ in STRAY])
    def test_a_stray_key_is_named_with_the_closest_known_one(self, text: str, path: str, meant: str) -> None:
        """Issue 16: ``hots`` is reported as ``hots``, an unknown key, with ``hosts`` suggested -- also where
        the key it was meant to be is required (``hosts``, ``source``, ``token_file``, ``upstream``): the stray
        key comes first, not "``hosts`` is required"."""
        exc = error(text)
        assert (exc.path, exc.problem) == (path, f"unknown key; did you mean {meant!r}?")

    def test_a_stray_key_like_no_known_key_is_named_alone(self) -> None:
        exc = error(minimal_with("[admin]\nzzz = 1\n"))
        assert str(exc) == "admin.zzz: unknown key"

    def test_a_required_key_missing_with_no_stray_lookalike_is_still_required(self) -> None:
        exc = error(MINIMAL.replace('hosts = ["*.amazonaws.com"]\n', ""))
        assert exc.path == "connections.main.hosts" and exc.problem.startswith("is required")


class TestTypes:
    @pytest.mark.parametrize(
        ("old", "new", "path", "expected"),
        [
            ('hosts = ["*.amazonaws.com"]', 'hosts = "x"', "connections.main.hosts", "a list of strings"),
            ('hosts = ["*.amazonaws.com"]', "hosts = [1]", "connections.main.hosts[0]", "a string"),
            ('hosts = ["*.amazonaws.com"]', 'hosts = ["*.amazonaws.com"]\nregion = 1',
             "connections.main.region", "a string"),
            ('source = "static"', "source = true", "connections.main.credentials.source", "a string"),
            ('source = "static"', 'source = "vault"', "connections.main.credentials.source", "static, chain"),
            ('hosts = ["*.amazonaws.com"]', 'hosts = ["*.amazonaws.com"]\nupstream_scheme = "ftp"',
             "connections.main.upstream_scheme", "http, https"),
            ('hosts = ["*.amazonaws.com"]', 'hosts = ["*.amazonaws.com"]\nsts_endpoint_url = "localhost:5000"',
             "connections.main.sts_endpoint_url", "URL"),
        ],
    )
    def test_wrong_type_in_connection(self, old: str, new: str, path: str, expected: str) -> None:
        """A value of the wrong type or outside its choices names the key and what was expected."""
        exc = error(MINIMAL.replace(old, new))
        assert exc.path == path
        assert expected in exc.problem

    @pytest.mark.parametrize(
        ("proxy", "path"),
        [
            ("max_buffered_body = true", "proxy.max_buffered_body"),
            ("max_buffered_body = -1", "proxy.max_buffered_body"),
            ("connect_timeout = 0", "proxy.connect_timeout"),
            ("read_timeout = true", "proxy.read_timeout"),
            ('upstream_connections = "many"', "proxy.upstream_connections"),
            ("upstream_connections = 0", "proxy.upstream_connections"),  # aiohttp: a limit of 0 is no limit
            ("upstream_connections = 0.5", "proxy.upstream_connections"),
            ("listen = 8080", "proxy.listen"),
            ('listen = "8080"', "proxy.listen"),
            ('listen = "127.0.0.1:99999"', "proxy.listen"),
            ('listen = "127.0.0.1:\u00b2"', "proxy.listen"),
            ("default_connection = 1", "proxy.default_connection"),
        ],
    )
    def test_wrong_type_in_proxy(self, proxy: str, path: str) -> None:
        """Bad [proxy] values name their key."""
        assert error(f"[proxy]\n{proxy}\n" + MINIMAL).path == path

    @pytest.mark.parametrize(
        ("text", "path"),
        [
            ('proxy = "x"\n' + MINIMAL, "proxy"),
            ("connections = 1\n", "connections"),
            ("[connections]\nmain = 1\n", "connections.main"),
            ('routes = "x"\n' + MINIMAL, "routes"),
            ("routes = [1]\n" + MINIMAL, "routes[0]"),
        ],
    )
    def test_wrong_table_type(self, text: str, path: str) -> None:
        """A table where a value is expected, or the reverse, names the key."""
        assert error(text).path == path

    @pytest.mark.parametrize(
        ("remove", "path"),
        [
            ('hosts = ["*.amazonaws.com"]\n', "connections.main.hosts"),
            ('access_key_id = "AKIDEXAMPLE"\n', "connections.main.credentials.access_key_id"),
            ('secret_access_key = "secret"\n', "connections.main.credentials.secret_access_key"),
            ('source = "static"\n', "connections.main.credentials.source"),
        ],
    )
    def test_required_keys(self, remove: str, path: str) -> None:
        """A missing required key is named."""
        assert error(MINIMAL.replace(remove, "")).path == path

    def test_missing_credentials(self) -> None:
        """A connection without a credentials table is refused."""
        text = '[connections.main]\nhosts = ["*.amazonaws.com"]\n'
        assert error(text).path == "connections.main.credentials"

    def test_bad_connection_name(self) -> None:
        """Connection names are restricted to letters, digits, '.', '_' and '-'."""
        exc = error(MINIMAL.replace("connections.main", 'connections."bad name"'))
        assert exc.path == "connections.bad name"


class TestHostGlobs:
    @pytest.mark.parametrize("glob", ["http://x", "", "*", "a b", "*.*", "*:*", "host/path", "[x"])
    def test_bad_glob_in_hosts(self, glob: str) -> None:
        """Bad or match-everything host globs are refused with the list index in the key path."""
        text = MINIMAL.replace('hosts = ["*.amazonaws.com"]', f'hosts = ["127.0.0.1:*", "{glob}"]')
        exc = error(text)
        assert exc.path == "connections.main.hosts[1]"
        assert "glob" in exc.problem

    def test_bad_glob_in_route(self) -> None:
        """A bad route host glob names routes[i].host."""
        exc = error(minimal_with('[[routes]]\nhost = "*"\nconnection = "main"\n'))
        assert exc.path == "routes[0].host"

    @pytest.mark.parametrize(
        "glob", ["*.amazonaws.com", "127.0.0.1:*", "localhost:4566", "[::1]:*", "s3.*.amazonaws.com", "h?st"]
    )
    def test_good_globs(self, glob: str) -> None:
        """Host, wildcard-host, host:port and bracketed IPv6 globs are accepted."""
        text = MINIMAL.replace('hosts = ["*.amazonaws.com"]', f'hosts = ["{glob}"]')
        assert loads(text, env={}).connections["main"].hosts == (glob,)

    @pytest.mark.parametrize(
        ("pattern", "host", "port", "matches"),
        [
            ("*.amazonaws.com", "sqs.eu-west-1.amazonaws.com", 443, True),
            ("*.amazonaws.com", "SQS.EU-WEST-1.AMAZONAWS.COM", 443, True),
            ("*.amazonaws.com", "amazonaws.com.evil.com", 443, False),
            ("*.amazonaws.com", "amazonaws.com", 443, False),
            ("127.0.0.1:*", "127.0.0.1", 5000, True),
            ("127.0.0.1:*", "127.0.0.2", 5000, False),
            ("localhost:4566", "localhost", 4566, True),
            ("localhost:4566", "localhost", 4567, False),
            ("localhost", "localhost", 1234, True),
            ("[::1]:*", "::1", 9000, True),
            ("[::1]", "::1", 9000, True),
            ("[::1]:80", "::1", 9000, False),
        ],
    )
    def test_host_matches(self, pattern: str, host: str, port: int, matches: bool) -> None:
        """A host glob ignores the port; a host:port glob checks both; IPv6 globs are bracketed."""
        assert host_matches(pattern, host, port) is matches


class TestConnectionReferences:
    def test_route_to_unknown_connection(self) -> None:
        """A route to an undefined connection names routes[i].connection and the defined ones."""
        exc = error(minimal_with('[[routes]]\nhost = "x.example.com"\nconnection = "nope"\n'))
        assert exc.path == "routes[0].connection"
        assert "'nope'" in exc.problem
        assert "main" in exc.problem

    def test_reverse_to_unknown_connection(self) -> None:
        """A reverse listener to an undefined connection names reverse[i].connection."""
        text = minimal_with('[[reverse]]\nlisten = "127.0.0.1:9"\nupstream = "http://x"\nconnection = "no"\n')
        assert error(text).path == "reverse[0].connection"

    def test_unknown_default_connection(self) -> None:
        """default_connection must name a defined connection."""
        assert error('[proxy]\ndefault_connection = "nope"\n' + MINIMAL).path == "proxy.default_connection"

    def test_no_connections(self) -> None:
        """Without the store, a config without any connection is refused; with it (the default), connections
        may all come from the store."""
        off = '[store]\nurl = ""\n'
        assert error('[proxy]\nlisten = "127.0.0.1:1"\n' + off).path == "connections"
        assert error("[connections]\n" + off).path == "connections"
        assert loads('[proxy]\nlisten = "127.0.0.1:1"\n').connections == {}


class TestListeners:
    def test_reverse_on_proxy_address(self) -> None:
        """A reverse listener on proxy.listen's address names both keys."""
        text = '[proxy]\nlisten = "127.0.0.1:9200"\n' + minimal_with(
            '[[reverse]]\nlisten = "127.0.0.1:9200"\nupstream = "http://x"\n'
        )
        exc = error(text)
        assert exc.path == "reverse[0].listen"
        assert "proxy.listen" in exc.problem

    def test_two_reverse_on_one_address(self) -> None:
        """Two reverse listeners on one address are refused at the second."""
        rev = '[[reverse]]\nlisten = "127.0.0.1:9200"\nupstream = "http://x"\n'
        exc = error(minimal_with(rev + rev))
        assert exc.path == "reverse[1].listen"
        assert "reverse[0].listen" in exc.problem

    def test_port_zero_twice(self) -> None:
        """Port 0 (any free port) may be used by several listeners."""
        rev = '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "http://x"\n'
        config = loads('[proxy]\nlisten = "127.0.0.1:0"\n' + minimal_with(rev + rev), env={})
        assert [r.listen for r in config.reverse] == [Address("127.0.0.1", 0)] * 2

    def test_listen_override(self) -> None:
        """loads(listen=...) replaces [proxy] listen."""
        config = loads('[proxy]\nlisten = "127.0.0.1:1"\n' + MINIMAL, env={}, listen="0.0.0.0:9000")
        assert config.proxy.listen == Address("0.0.0.0", 9000)

    def test_listen_override_ipv6(self) -> None:
        """An IPv6 --listen is bracketed and shown bracketed."""
        config = loads(MINIMAL, env={}, listen="[::1]:8080")
        assert config.proxy.listen == Address("::1", 8080)
        assert str(config.proxy.listen) == "[::1]:8080"

    def test_bad_listen_override(self) -> None:
        """A bad --listen is named as such."""
        assert error(MINIMAL, listen="nope").path == "--listen"

    def test_listen_override_collides_with_reverse(self) -> None:
        """The overridden address is checked against reverse listeners too."""
        text = minimal_with('[[reverse]]\nlisten = "127.0.0.1:9200"\nupstream = "http://x"\n')
        assert error(text, listen="127.0.0.1:9200").path == "reverse[0].listen"

    @pytest.mark.parametrize("upstream", ["search.example.com", "http://[::1", "https://[::1/x", "http://h:65536",
                                          "http://h:-1"])
    def test_bad_reverse_upstream(self, upstream: str) -> None:
        """A reverse upstream must be an http(s) URL; one urlsplit can't split (found by the config fuzzer) is
        a ConfigError naming the key, not a ValueError."""
        text = minimal_with(f'[[reverse]]\nlisten = "127.0.0.1:9"\nupstream = "{upstream}"\n')
        assert error(text).path == "reverse[0].upstream"


class TestToml:
    def test_invalid_toml(self) -> None:
        """Invalid TOML is a ConfigError that names the source and says it is not valid TOML."""
        with pytest.raises(ConfigError, match=r"^cfg\.toml: not valid TOML") as info:
            loads("[proxy\nlisten = ", env={}, source="cfg.toml")
        assert info.value.path == ""


class TestSizes:
    @pytest.mark.parametrize(
        ("value", "size"),
        [
            ("8MiB", 8 * 2**20),
            ("5GiB", 5 * 2**30),
            (1024, 1024),
            (0, 0),
            ("1024", 1024),
            ("100B", 100),
            ("8MB", 8_000_000),
            ("64 KiB", 64 * 1024),
            ("2TiB", 2 * 2**40),
        ],
    )
    def test_sizes(self, value: object, size: int) -> None:
        """Sizes are bytes or a number with a decimal or binary unit."""
        assert parse_size(value, "proxy.max_buffered_body") == size

    def test_size_in_config(self) -> None:
        """max_buffered_body in [proxy] accepts a size string."""
        config = loads('[proxy]\nmax_buffered_body = "5GiB"\n' + MINIMAL, env={})
        assert config.proxy.max_buffered_body == 5 * 2**30

    @pytest.mark.parametrize("value", ["8XB", "8.5MiB", "MiB", "", "-1", "eight", "8 MiB MiB", True, 1.5, [1]])
    def test_bad_sizes(self, value: object) -> None:
        """Bad sizes are refused naming the key."""
        with pytest.raises(ConfigError) as info:
            parse_size(value, "proxy.max_buffered_body")
        assert info.value.path == "proxy.max_buffered_body"

    def test_bad_size_in_config(self) -> None:
        """A bad size in the file names proxy.max_buffered_body."""
        assert error('[proxy]\nmax_buffered_body = "8 lots"\n' + MINIMAL).path == "proxy.max_buffered_body"


class TestParseAddress:
    @pytest.mark.parametrize(
        ("value", "address"),
        [
            ("127.0.0.1:8080", Address("127.0.0.1", 8080)),
            ("[::1]:0", Address("::1", 0)),
            ("localhost:65535", Address("localhost", 65535)),
        ],
    )
    def test_good(self, value: str, address: Address) -> None:
        """HOST:PORT and [IPv6]:PORT parse; ports 0..65535."""
        assert parse_address(value, "x") == address

    @pytest.mark.parametrize("value", ["127.0.0.1", ":8080", "h:65536", "h:-1", "h:８０", "h:\u00b2", "h:"])
    def test_bad(self, value: str) -> None:
        """Anything else is a ConfigError naming the key (never a bare ValueError)."""
        with pytest.raises(ConfigError) as info:
            parse_address(value, "proxy.listen")
        assert info.value.path == "proxy.listen"


class TestFindConfig:
    HOME = {"HOME": "/home/u"}
    USER = Path("/home/u/.config/sigproxy/config.toml")
    LOCAL = Path("sigproxy.toml")
    ETC = Path("/etc/sigproxy/config.toml")

    def test_explicit_wins(self) -> None:
        """-c CONFIG is used as given, whatever exists."""
        env = {**self.HOME, "SIGPROXY_CONFIG": "/env.toml"}
        assert find_config("/x.toml", env=env, exists=lambda p: True) == Path("/x.toml")

    def test_env_var_next(self) -> None:
        """$SIGPROXY_CONFIG comes before every search location."""
        env = {**self.HOME, "SIGPROXY_CONFIG": "/env.toml"}
        assert find_config(None, env=env, exists=lambda p: True) == Path("/env.toml")

    def test_empty_env_var_is_ignored(self) -> None:
        """An empty $SIGPROXY_CONFIG is as if unset."""
        env = {**self.HOME, "SIGPROXY_CONFIG": ""}
        assert find_config(None, env=env, exists=lambda p: True) == self.LOCAL

    @pytest.mark.parametrize(
        ("present", "expected"),
        [
            ({LOCAL, USER, ETC}, LOCAL),
            ({USER, ETC}, USER),
            ({ETC}, ETC),
        ],
    )
    def test_search_order(self, present: set[Path], expected: Path) -> None:
        """./sigproxy.toml, then ~/.config/sigproxy/config.toml, then /etc/sigproxy/config.toml."""
        assert find_config(None, env=self.HOME, exists=lambda p: p in present) == expected

    def test_search_path(self) -> None:
        """config_search_path lists the locations in order, $SIGPROXY_CONFIG first when set."""
        env = {**self.HOME, "SIGPROXY_CONFIG": "/env.toml"}
        assert config_search_path(env) == [Path("/env.toml"), self.LOCAL, self.USER, self.ETC]

    def test_nothing_found(self) -> None:
        """With no file anywhere the error lists every place looked at and suggests -c."""
        with pytest.raises(ConfigError) as info:
            find_config(None, env=self.HOME, exists=lambda p: False)
        message = str(info.value)
        for path in (self.LOCAL, self.USER, self.ETC):
            assert str(path) in message
        assert "-c" in message


def test_every_proxy_key_is_in_the_example() -> None:
    """Each [proxy] key (ProxyConfig field) is shown, set or commented, in config.example.toml."""
    import dataclasses
    import re

    text = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    keys = {"admin_tls": "admin_tls_cert_file"}  # fields set by keys of another name
    missing = [f.name for f in dataclasses.fields(ProxyConfig)
               if not f.name.startswith("_") and not re.search(rf"^#? ?{keys.get(f.name, f.name)} = ", text, re.M)]
    assert missing == []


def test_example_control_plane_sections() -> None:
    """The commented [store], [admin], [onboarding] and [connect] examples of config.example.toml load as written."""
    import re

    text = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    tail = text[text.index("# [store]"):]
    lines = [m.group(1) for m in re.finditer(r"^# (\[[a-z]+\]|[a-z_]+ = .*)$", tail, re.M)]
    assert lines[0] == "[store]" and "[admin]" in lines and "[onboarding]" in lines
    config = loads("\n".join(lines), env={
        "PGPASSWORD": "pw", "SIGPROXY_STORE_KEY": "NdEQLpVKGKnh_7TxI9G85bFqKqRoBD_1HaS8j91SZ9k=",
        "SIGPROXY_ADMIN_TOKEN": "0123456789abcdef0123456789abcdef",
        "SIGPROXY_WEBHOOK_SECRET": "0123456789abcdef-webhook"})
    assert config.connect.public_url == "https://connect.example.com" and config.connect.max_attempts == 10
    assert config.connect.template_url is not None and config.connect.webhook_secret is not None
    assert config.store.url == "postgresql://sigproxy:pw@db.internal:5432/sigproxy"
    assert len(config.store.encryption_keys) == 1 and config.store.poll_interval == 1.0
    assert config.admin.token is not None
    assert config.onboarding.principal == "arn:aws:iam::111122223333:role/platform"
    assert config.onboarding.require_role_path == "/sigproxy-assumable/"


@pytest.mark.parametrize(("text", "path", "words"), [
    ('[store]\nurl = "mysql://db/x"', "store.url", "not supported"),
    # urlsplit raises ValueError on these (an unclosed IPv6 bracket, a port out of range): still a ConfigError
    ('[store]\nurl = "postgresql://u:pw@[::1/db"', "store.url", "not supported"),
    ('[store]\nencryption_keys = ["not base64!"]', "store.encryption_keys[0]", "base64"),
    ('[store]\nencryption_keys = ["c2hvcnQ="]', "store.encryption_keys[0]", "32 bytes"),
    ('[store]\nurl = "postgresql://u@h/db"', "store.encryption_keys", "required with PostgreSQL"),
    ('[store]\nencryption_keys = ["${env:UNSET}"]', "store.encryption_keys[0]", "not set"),
    ('[store]\npoll_interval = 0', "store.poll_interval", "positive"),
    ('[store]\ncolour = "red"', "store.colour", "unknown key"),
    ('[admin]\ntoken = "short"', "admin.token", "shorter than 16"),
    ('[onboarding]\nprincipal = "me"', "onboarding.principal", "account id or an IAM ARN"),
    ('[onboarding]\nrequire_role_path = "nopath"', "onboarding.require_role_path", "path like"),
])
def test_control_plane_errors(text: str, path: str, words: str) -> None:
    """Every bad [store]/[admin]/[onboarding] value names its key; a key's value is never echoed."""
    err = error(MINIMAL + text)
    assert err.path == path and words in err.problem
    assert "c2hvcnQ=" not in str(err)


def test_admin_api_off_reason() -> None:
    """Without a token the admin API is served only on loopback addresses."""
    no_token = loads(MINIMAL).admin
    assert no_token.api_off_reason("127.0.0.1") is None and no_token.api_off_reason("::1") is None
    assert no_token.api_off_reason("localhost") is None
    assert "not a loopback" in (no_token.api_off_reason("0.0.0.0") or "")
    with_token = loads(MINIMAL + '[admin]\ntoken = "0123456789abcdef"').admin
    assert with_token.api_off_reason("0.0.0.0") is None


def test_store_defaults(tmp_path: Path) -> None:
    config = loads(MINIMAL)
    assert config.store.enabled and config.store.url is None and config.store.migrate
    assert config.store.resolved_url(tmp_path) == f"sqlite:///{tmp_path}/store.db"
    assert not loads(MINIMAL + '[store]\nurl = ""').store.enabled


def test_connect_defaults_and_values() -> None:
    assert loads(MINIMAL).connect == ConnectConfig()
    c = loads(MINIMAL + """[connect]
public_url = "https://connect.example.com/onboard/"
session_ttl = 60
webhook_secret = "${env:HOOK}"
product_name = "Acme Cloud"
logo_file = "/etc/sigproxy/logo.svg"
template_url = "https://bucket.s3.eu-west-1.amazonaws.com/role.json"
max_attempts = 5
""", env={"HOOK": "0123456789abcdef-hook"}).connect
    assert c.public_url == "https://connect.example.com/onboard" and c.session_ttl == 60
    assert c.webhook_secret is not None and c.webhook_secret.reveal() == "0123456789abcdef-hook"
    assert "0123456789abcdef-hook" not in repr(c)
    assert (c.product_name, str(c.logo_file), c.max_attempts) == ("Acme Cloud", "/etc/sigproxy/logo.svg", 5)
    assert c.template_url == "https://bucket.s3.eu-west-1.amazonaws.com/role.json"


@pytest.mark.parametrize(("text", "path", "words"), [
    ('public_url = "ftp://x"', "connect.public_url", "http(s) URL"),
    ('public_url = "https://[::1/x"', "connect.public_url", "http(s) URL"),
    ('public_url = "https://h:99999/x"', "connect.public_url", "http(s) URL"),
    ('template_url = "https://[b.s3.amazonaws.com/t.json"', "connect.template_url", "https URL"),
    ('public_url = "https://x/?a=b"', "connect.public_url", "without query"),
    ("session_ttl = 59", "connect.session_ttl", "60 to 86400"),
    ("session_ttl = 86401", "connect.session_ttl", "60 to 86400"),
    ('webhook_secret = "short"', "connect.webhook_secret", "shorter than 16"),
    ('logo_file = "/x/logo.gif"', "connect.logo_file", ".png or .svg"),
    ('template_url = "http://b.s3.amazonaws.com/t.json"', "connect.template_url", "https URL"),
    ('template_url = "https://example.com/t.json"', "connect.template_url", "S3"),
    ("max_attempts = 0", "connect.max_attempts", "1 to 1000"),
    ('product_name = ""', "connect.product_name", "empty"),
    ('colour = "red"', "connect.colour", "unknown key"),
])
def test_connect_errors(text: str, path: str, words: str) -> None:
    err = error(MINIMAL + "[connect]\n" + text)
    assert err.path == path and words in err.problem


@pytest.mark.parametrize(("written", "upstream"), [
    ("wss://abc.execute-api.eu-west-1.amazonaws.com/prod", "https://abc.execute-api.eu-west-1.amazonaws.com/prod"),
    ("WS://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("https://x.amazonaws.com", "https://x.amazonaws.com"),
])
def test_a_reverse_upstream_may_be_a_websocket_url(written: str, upstream: str) -> None:
    """ws:// and wss:// are http's and https's (RFC 6455 3): a reverse listener relays both kinds."""
    config = loads(f"""
[connections.main]
hosts = ["*.amazonaws.com", "127.0.0.1:*"]
[connections.main.credentials]
source = "chain"
[[reverse]]
listen = "127.0.0.1:0"
upstream = "{written}"
connection = "main"
""")
    assert config.reverse[0].upstream == upstream


def test_a_reverse_upstream_of_another_scheme_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="expected an http:// or https:// URL"):
        loads('[connections.m]\nhosts = ["*.amazonaws.com"]\n[connections.m.credentials]\nsource = "chain"\n'
              '[[reverse]]\nlisten = "127.0.0.1:0"\nupstream = "ftp://x.amazonaws.com"\nconnection = "m"\n')
