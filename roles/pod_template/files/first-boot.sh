#!/usr/bin/env bash
# Cloud Pod first boot, inside the pod: what the pod needs besides its site's files.
#
#   first-boot.sh --pod NAME [--domain DOMAIN] [--web-root DIR] [--marker FILE]
#                 [--php-version X.Y] [--customer-user USER] [--reload-nginx] [--reload-sshd]
#                 [--access-only] [--check]
#
# In this order, each step only when the pod is not already so:
#   - host name: /etc/hostname and the running name are the pod's (PVE writes the same at start);
#   - customer account: USER (default web) exists, unprivileged (not uid 0), login shell
#     /bin/bash, no password ('*' in /etc/shadow: no password can match; it logs in over SSH with
#     its keys only, which Ansible writes to /etc/ssh/cloudpod/authorized_keys/USER);
#   - web root: DIR (default /var/www/cloudpod/public) exists, owned by USER, mode 0755; files
#     in it that www-data owned (a pod set up before the customer account) are given to USER;
#   - PHP-FPM's pool "www" runs as USER (the site can write its own files); its socket keeps
#     its path and stays www-data's (mode 0660), so Nginx reaches it and USER's shell does not;
#   - SSH: the host keys exist (ssh-keygen -A when the clone has none), the directory of the
#     authorized_keys files (root's, 0755), sshd's configuration passes 'sshd -t', ssh is
#     enabled and running; --reload-sshd (the caller changed sshd's drop-in) reloads it;
#   - services: PHP-FPM (the newest under /etc/php, or --php-version), MariaDB and Nginx enabled
#     and running; --reload-nginx (the caller changed Nginx's configuration) tests the
#     configuration and reloads a running Nginx;
#   - MariaDB: a database and a user named after the pod, with ALL privileges on that database,
#     credentials kept in ONE place: /root/.cloudpod/mariadb.cnf (root, 0600, [client] with user
#     and password, [mysql] with database). The password is generated here from /dev/urandom and
#     never printed. An existing user whose password is in that file keeps it. Root talks to
#     MariaDB over the unix socket (unix_socket authentication);
#   - marker: FILE (default /etc/cloudpod/first-boot.json) says pod, domain and version.
# --access-only: only the customer account, web root, PHP-FPM pool and SSH steps (the host name,
# Nginx, MariaDB and the marker are left alone).
#
# Output: first one line per SSH host key, "ssh host key: SHA256:<base64> (ED25519|ECDSA|RSA)"
# (public fingerprints; nothing of the private keys), then what was done, one line each; exactly
# "unchanged" as the last line when nothing had to be done. --check reports what would be done
# ("...: would be ...") and changes nothing.
# Exit codes: 0 done or unchanged; 2 usage; 1 any other error (message on stderr).
set -eu
set -o pipefail
umask 077

readonly CNF_DIR=/root/.cloudpod
readonly CNF="$CNF_DIR/mariadb.cnf"
readonly SOCKET="${CLOUDPOD_MARIADB_SOCKET:-/run/mysqld/mysqld.sock}"
readonly LOCK=/run/lock/cloudpod-first-boot.lock
# Database names that belong to MariaDB itself: a pod called like one gets a prefix.
readonly RESERVED=" mysql information_schema performance_schema sys test "

pod=""
domain=""
check=0
password=""
web_root=/var/www/cloudpod/public
marker=/etc/cloudpod/first-boot.json
php_version=""
reload_nginx=0
reload_sshd=0
access_only=0
customer_user=web
readonly AUTHORIZED_KEYS_DIR=/etc/ssh/cloudpod/authorized_keys

die() { printf 'first-boot.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
usage() {
    printf 'usage: first-boot.sh --pod NAME [--domain DOMAIN] [--web-root DIR] [--marker FILE] [--php-version X.Y] [--customer-user USER] [--reload-nginx] [--reload-sshd] [--access-only] [--check]\n' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --pod) [ $# -ge 2 ] || usage; pod="$2"; shift 2 ;;
        --pod=*) pod="${1#--pod=}"; shift ;;
        --domain) [ $# -ge 2 ] || usage; domain="$2"; shift 2 ;;
        --domain=*) domain="${1#--domain=}"; shift ;;
        --web-root) [ $# -ge 2 ] || usage; web_root="$2"; shift 2 ;;
        --marker) [ $# -ge 2 ] || usage; marker="$2"; shift 2 ;;
        --php-version) [ $# -ge 2 ] || usage; php_version="$2"; shift 2 ;;
        --customer-user) [ $# -ge 2 ] || usage; customer_user="$2"; shift 2 ;;
        --reload-nginx) reload_nginx=1; shift ;;
        --reload-sshd) reload_sshd=1; shift ;;
        --access-only) access_only=1; shift ;;
        --check) check=1; shift ;;
        -h|--help) usage ;;
        *) printf 'first-boot.sh: unknown argument: %s\n' "$1" >&2; usage ;;
    esac
done
[ -n "$pod" ] || die "--pod is required" 2
case "$pod" in *[!A-Za-z0-9._-]*) die "invalid pod name '$pod': letters, digits, '.', '_' and '-' only" 2 ;; esac
if [ -n "$domain" ]; then
    case "$domain" in *[!A-Za-z0-9.-]*|.*|*..*) die "invalid domain '$domain'" 2 ;; esac
fi
case "$web_root" in /*) ;; *) die "--web-root must be an absolute path" 2 ;; esac
case "$marker" in /*) ;; *) die "--marker must be an absolute path" 2 ;; esac
case "$php_version" in ""|[0-9]*.[0-9]*) ;; *) die "invalid --php-version '$php_version' (like 8.2)" 2 ;; esac
# A plain POSIX user name, never root's or a system account's.
if ! printf '%s' "$customer_user" | grep -Eqx '[a-z_][a-z0-9_-]{0,31}'; then
    die "invalid --customer-user '$customer_user': lower case letters, digits, '_' and '-', at most 32" 2
fi
if [ "$customer_user" = root ] || [ "$customer_user" = www-data ] || [ "$customer_user" = mysql ]; then
    die "--customer-user must not be a system account ($customer_user)" 2
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (MariaDB's root login is the unix socket)"
[ "$access_only" = 1 ] || command -v mariadb >/dev/null 2>&1 || die "the mariadb client is not installed"
command -v sshd >/dev/null 2>&1 || die "no SSH server (openssh-server) in the pod: was it cloned from the Cloud Pod template?"

# Names: the pod name with every character MariaDB would need quoting for replaced by '_',
# lower case; databases hold at most 64 characters, user names 80.
base="$(printf '%s' "$pod" | LC_ALL=C tr '[:upper:]' '[:lower:]' | LC_ALL=C tr -c 'a-z0-9_' '_')"
case "$RESERVED" in *" $base "*) base="pod_$base" ;; esac
readonly DB="${base:0:64}"
readonly DB_USER="${base:0:80}"

# Root's SQL over the socket. Statements arrive on stdin (never on a command line, which any
# process could read); errors are passed on with the password masked.
sql() {
    local out err rc=0
    err="$(mktemp)"
    out="$(mariadb --no-defaults --protocol=socket --socket="$SOCKET" --user=root \
                   --batch --skip-column-names 2>"$err")" || rc=$?
    if [ "$rc" -ne 0 ]; then
        local message
        message="$(cat "$err")"
        rm -f "$err"
        if [ -n "$password" ]; then
            message="${message//"$password"/********}"
        fi
        die "MariaDB: ${message:-exit code $rc}"
    fi
    rm -f "$err"
    printf '%s' "$out"
}

# A value quoted as an SQL string literal.
quote() {
    local value="${1//\\/\\\\}"
    printf "'%s'" "${value//\'/\'\'}"
}

# A value of the credentials file, or nothing.
cnf_value() {
    [ -f "$CNF" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$CNF" | tail -n 1 | sed 's/[[:space:]]*$//'
}

write_cnf() {
    local tmp
    install -d -m 0700 -o root -g root "$CNF_DIR"
    tmp="$(mktemp "$CNF_DIR/.mariadb.cnf.XXXXXX")"
    {
        printf '# Cloud Pod %s%s: MariaDB credentials written by %s.\n' \
            "$pod" "${domain:+ ($domain)}" /opt/cloudpod-bootstrap/first-boot.sh
        printf '# Use: mariadb --defaults-extra-file=%s\n' "$CNF"
        # database= only for the mariadb/mysql client ([mysql]): in [client], mariadb-dump would
        # read it as a prefix of its --databases option and warn.
        printf '[client]\nuser=%s\npassword=%s\n[mysql]\ndatabase=%s\n' "$DB_USER" "$password" "$DB"
    } >"$tmp"
    chmod 0600 "$tmp"
    chown root:root "$tmp"
    mv -f "$tmp" "$CNF"
}

changes=()
# What was done (or, with --check, what would be): "<thing>: <participle>".
did() {
    if [ "$check" = 1 ]; then changes+=("$1: would be $2"); else changes+=("$1: $2"); fi
}

nginx_test() {
    nginx -t -q 2>/dev/null || die "Nginx's configuration does not pass 'nginx -t': $(nginx -t 2>&1 | tail -n 2 | tr '\n' ' ')"
}

php_test() {
    "php-fpm$php_version" --test >/dev/null 2>&1 \
        || die "PHP-FPM's configuration does not pass 'php-fpm$php_version --test': $("php-fpm$php_version" --test 2>&1 | tail -n 2 | tr '\n' ' ')"
}

# sshd's own check of its configuration (drop-ins included): a configuration it would refuse is
# never loaded, so the running sshd (the customer's way in) keeps working.
sshd_test() {
    install -d -m 0755 /run/sshd
    sshd -t 2>/dev/null || die "sshd's configuration does not pass 'sshd -t': $(sshd -t 2>&1 | tail -n 2 | tr '\n' ' ')"
}

# The pod's own host keys (a clone of the template has none until cloudpod-ssh-host-keys.service
# or this made them) and the directory of the customer's authorized_keys, root's: the customer
# cannot change the list of keys (the panel's API does).
ssh_host_keys() {
    if ! compgen -G '/etc/ssh/ssh_host_*_key' >/dev/null; then
        [ "$check" = 1 ] || ssh-keygen -A >/dev/null || die "ssh-keygen -A failed"
        did "SSH host keys" "generated"
    fi
    local dir
    for dir in "${AUTHORIZED_KEYS_DIR%/*}" "$AUTHORIZED_KEYS_DIR"; do
        if [ ! -d "$dir" ] || [ "$(stat -c '%u:%g:%a' "$dir")" != "0:0:755" ]; then
            [ "$check" = 1 ] || { install -d -m 0755 -o root -g root "$dir"; chown root:root "$dir"; chmod 0755 "$dir"; }
            did "$dir" "made root's, mode 0755"
        fi
    done
}

# The public fingerprints of the host keys, one line each (ssh-keygen -l reads the .pub files).
print_host_keys() {
    local type file line
    for type in ed25519 ecdsa rsa; do
        file="/etc/ssh/ssh_host_${type}_key.pub"
        [ -f "$file" ] || continue
        line="$(ssh-keygen -l -E sha256 -f "$file")" || die "cannot read $file"
        # "256 SHA256:... root@host (ED25519)": the fingerprint and the type
        printf 'ssh host key: %s %s\n' "$(printf '%s' "$line" | cut -d' ' -f2)" "${line##* }"
    done
}

finish() {
    print_host_keys
    if [ "${#changes[@]}" -eq 0 ]; then
        printf 'unchanged\n'
    else
        printf '%s\n' "${changes[@]}"
    fi
    exit 0
}

exec 9>"$LOCK"
flock -w 60 9 || die "another first-boot.sh is running (lock $LOCK)"

# -- host name ---------------------------------------------------------------------------
if [ "$access_only" = 0 ] && [ "$(cat /etc/hostname 2>/dev/null)" != "$pod" ]; then
    [ "$check" = 1 ] || printf '%s\n' "$pod" >/etc/hostname
    did "/etc/hostname" "set to $pod"
fi
if [ "$access_only" = 0 ] && [ "$(hostname)" != "$pod" ]; then
    [ "$check" = 1 ] || hostname "$pod"
    did "host name" "set to $pod"
fi

# -- customer account ----------------------------------------------------------------------
account="$(getent passwd "$customer_user" || true)"
if [ -z "$account" ]; then
    [ "$check" = 1 ] || useradd --create-home --user-group --shell /bin/bash \
        --comment "Cloud Pod customer" "$customer_user" || die "cannot create the user $customer_user"
    did "user $customer_user" "created"
else
    [ "$(printf '%s' "$account" | cut -d: -f3)" -ge 1000 ] \
        || die "the customer account $customer_user is a system account (uid below 1000): choose another cloudpods_customer_user"
    if [ "$(printf '%s' "$account" | cut -d: -f7)" != /bin/bash ]; then
        [ "$check" = 1 ] || usermod --shell /bin/bash "$customer_user"
        did "user $customer_user" "given the login shell /bin/bash"
    fi
fi
# '*': no password at all (not '!', "locked", which sshd refuses for every method without PAM).
if [ -z "$account" ] || [ "$(getent shadow "$customer_user" | cut -d: -f2)" != '*' ]; then
    [ "$check" = 1 ] || usermod --password '*' "$customer_user"
    [ -z "$account" ] || did "user $customer_user" "left without a password"
fi

# -- web root ------------------------------------------------------------------------------
if [ ! -d "$web_root" ]; then
    [ "$check" = 1 ] || install -d -m 0755 -o "$customer_user" -g "$customer_user" "$web_root"
    did "$web_root" "created"
elif [ "$(stat -c '%U:%G:%a' "$web_root")" != "$customer_user:$customer_user:755" ]; then
    [ "$check" = 1 ] || { chown "$customer_user:$customer_user" "$web_root"; chmod 0755 "$web_root"; }
    did "$web_root" "made $customer_user's, mode 0755"
fi
if [ -d "$web_root" ] && [ -n "$(find "$web_root" -xdev -user www-data -print -quit 2>/dev/null)" ]; then
    [ "$check" = 1 ] || find "$web_root" -xdev -user www-data -exec chown -h "$customer_user:$customer_user" {} +
    did "files of www-data in $web_root" "given to $customer_user"
fi

# -- PHP-FPM pool --------------------------------------------------------------------------
if [ -z "$php_version" ]; then
    php_version="$(find /etc/php -mindepth 2 -maxdepth 2 -name fpm -type d 2>/dev/null \
                   | cut -d/ -f4 | sort -V | tail -n 1)"
fi
[ -n "$php_version" ] || die "no PHP-FPM under /etc/php: was the pod cloned from the Cloud Pod template?"
pool="/etc/php/$php_version/fpm/pool.d/www.conf"
[ -f "$pool" ] || die "no PHP-FPM pool $pool"
pool_changed=0
# "key = value" lines of the pool, each exactly once (Debian's www.conf has them uncommented).
for setting in "user=$customer_user" "group=$customer_user" "listen.owner=www-data" "listen.group=www-data" "listen.mode=0660"; do
    key="${setting%%=*}"
    value="${setting#*=}"
    if [ "$(grep -Ec "^[[:space:]]*${key//./\\.}[[:space:]]*=" "$pool")" != 1 ] \
        || ! grep -Eqx "[[:space:]]*${key//./\\.}[[:space:]]*=[[:space:]]*${value}[[:space:]]*" "$pool"; then
        if [ "$check" = 0 ]; then
            sed -i -E "/^[[:space:]]*${key//./\\.}[[:space:]]*=/d" "$pool"
            sed -i -E "/^\[www\]/a $key = $value" "$pool"
        fi
        did "PHP-FPM pool www" "given $key = $value"
        pool_changed=1
    fi
done

# -- SSH host keys and the keys' directory (before sshd is tested or started) ---------------
ssh_host_keys

# -- services ------------------------------------------------------------------------------
units=(ssh)
[ "$access_only" = 1 ] || units=("php$php_version-fpm" mariadb nginx ssh)
nginx_started=0
php_started=0
sshd_started=0
for unit in "${units[@]}"; do
    if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
        [ "$check" = 1 ] || systemctl enable --quiet "$unit" 2>/dev/null || die "cannot enable $unit"
        did "service $unit" "enabled"
    fi
    if ! systemctl is-active --quiet "$unit"; then
        if [ "$check" = 0 ]; then
            case "$unit" in
                nginx) nginx_test ;;
                ssh) sshd_test ;;
                php*) php_test ;;
            esac
        fi
        [ "$check" = 1 ] || systemctl start "$unit" || die "cannot start $unit: $(systemctl status --no-pager --lines=3 "$unit" 2>&1 | tail -n 3 | tr '\n' ' ')"
        did "service $unit" "started"
        case "$unit" in nginx) nginx_started=1 ;; ssh) sshd_started=1 ;; php*) php_started=1 ;; esac
    fi
done
if [ "$reload_nginx" = 1 ] && [ "$nginx_started" = 0 ] && [ "$access_only" = 0 ]; then
    if [ "$check" = 0 ]; then
        nginx_test
        systemctl reload nginx || die "cannot reload nginx"
    fi
    did "service nginx" "reloaded"
fi
# A pool that runs as another user: the workers are started again (a restart, so none of them
# keeps running as the old user).
if [ "$pool_changed" = 1 ] && [ "$php_started" = 0 ] && systemctl is-active --quiet "php$php_version-fpm"; then
    if [ "$check" = 0 ]; then
        php_test
        systemctl restart "php$php_version-fpm" || die "cannot restart php$php_version-fpm"
    fi
    did "service php$php_version-fpm" "restarted"
fi
if [ "$reload_sshd" = 1 ] && [ "$sshd_started" = 0 ]; then
    if [ "$check" = 0 ]; then
        sshd_test
        systemctl reload ssh || die "cannot reload ssh"
    fi
    did "service ssh" "reloaded"
fi
if [ "$access_only" = 1 ]; then
    finish
fi

# MariaDB may have been started a moment ago: give it time to open its socket.
for _ in $(seq 1 30); do
    if [ -S "$SOCKET" ] && printf 'SELECT 1;\n' | sql >/dev/null 2>&1; then
        break
    fi
    [ "$check" = 0 ] || break
    sleep 1
done
if ! printf 'SELECT 1;\n' | sql >/dev/null 2>&1 && [ "$check" = 1 ]; then
    # A dry run right after a start that was only pretended: report, do not wait.
    did "database $DB, user $DB_USER" "created if missing (MariaDB does not answer: not looked at)"
    finish
fi
printf 'SELECT 1;\n' | sql >/dev/null

db_exists="$(printf 'SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s;\n' "$(quote "$DB")" | sql)"
user_exists="$(printf "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = 'localhost';\n" "$(quote "$DB_USER")" | sql)"
file_user="$(cnf_value user)"
file_db="$(cnf_value database)"
file_password="$(cnf_value password)"

# The credentials: those of the file when it names this user, else new ones.
new_password=0
if [ -n "$file_password" ] && [ "$file_user" = "$DB_USER" ]; then
    password="$file_password"
else
    new_password=1
fi

if [ "$db_exists" = 0 ]; then
    # shellcheck disable=SC2016  # the backticks quote the SQL identifier: no shell expansion wanted
    [ "$check" = 1 ] || printf 'CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n' "$DB" | sql
    did "database $DB" "created"
fi

if [ "$new_password" = 1 ]; then
    # Written before MariaDB is told, so that a run stopped in between is finished by the next
    # one with the same password.
    if [ "$check" = 0 ]; then
        password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
        [ "${#password}" -eq 48 ] || die "could not read /dev/urandom"
        write_cnf
    fi
    did "$CNF" "written with a new password"
elif [ "$file_db" != "$DB" ] || ! grep -q '^\[mysql\]' "$CNF"; then
    [ "$check" = 1 ] || write_cnf
    did "$CNF" "given the database name (in [mysql])"
fi

if [ "$user_exists" = 0 ]; then
    if [ "$check" = 0 ]; then
        printf "CREATE USER %s@'localhost' IDENTIFIED BY %s;\n" "$(quote "$DB_USER")" "$(quote "$password")" | sql
    fi
    did "user $DB_USER@localhost" "created"
elif [ "$new_password" = 1 ]; then
    [ "$check" = 1 ] || printf "ALTER USER %s@'localhost' IDENTIFIED BY %s;\n" "$(quote "$DB_USER")" "$(quote "$password")" | sql
    did "user $DB_USER@localhost" "given a new password (no credentials file had it)"
elif ! printf 'SELECT 1;\n' | mariadb --defaults-file="$CNF" --protocol=socket --socket="$SOCKET" \
        --database=information_schema --batch --skip-column-names >/dev/null 2>&1; then
    # The user exists but the file's password does not open it: the file is the reference.
    [ "$check" = 1 ] || printf "ALTER USER %s@'localhost' IDENTIFIED BY %s;\n" "$(quote "$DB_USER")" "$(quote "$password")" | sql
    did "user $DB_USER@localhost" "given back the password in $CNF"
fi

granted=0
if [ "$user_exists" != 0 ]; then
    granted="$(printf "SELECT COUNT(*) FROM mysql.db WHERE Host = 'localhost' AND User = %s AND Db = %s AND Select_priv = 'Y' AND Insert_priv = 'Y' AND Update_priv = 'Y' AND Delete_priv = 'Y' AND Create_priv = 'Y' AND Drop_priv = 'Y' AND Alter_priv = 'Y' AND Index_priv = 'Y';\n" \
        "$(quote "$DB_USER")" "$(quote "${DB//_/\\_}")" | sql)"
fi
if [ "$granted" = 0 ]; then
    [ "$check" = 1 ] || printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO %s@'localhost';\n" "${DB//_/\\_}" "$(quote "$DB_USER")" | sql
    did "user $DB_USER@localhost" "granted all privileges on $DB"
fi

if [ -f "$CNF" ] && [ "$(stat -c '%u:%g:%a' "$CNF")" != "0:0:600" ]; then
    [ "$check" = 1 ] || { chown root:root "$CNF"; chmod 0600 "$CNF"; }
    did "$CNF" "made root's, mode 0600"
fi

# -- marker --------------------------------------------------------------------------------
# The same text Ansible's to_nice_json wrote for version 1 of the role (sorted keys, 4 spaces).
marker_text="$(printf '{\n    "domain": "%s",\n    "pod": "%s",\n    "version": 1\n}' "$domain" "$pod")"
if [ "$(cat "$marker" 2>/dev/null)" != "$marker_text" ]; then
    if [ "$check" = 0 ]; then
        install -d -m 0755 -o root -g root "$(dirname "$marker")"
        printf '%s\n' "$marker_text" >"$marker.tmp"
        chmod 0644 "$marker.tmp"
        mv -f "$marker.tmp" "$marker"
    fi
    did "$marker" "written"
fi

finish
