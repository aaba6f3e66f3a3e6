#!/usr/bin/env bash
# Cloud Pod first boot: the customer's MariaDB database and user, inside the pod.
#
#   first-boot.sh --pod NAME [--domain DOMAIN] [--check]
#
# Creates (when missing) a database and a user named after the pod, with ALL privileges on that
# database, and keeps the credentials in ONE place: /root/.cloudpod/mariadb.cnf (root, 0600,
# a [client] section with user, password and database). The password is generated here from
# /dev/urandom and never printed. An existing user whose password is in that file keeps it.
# Talks to MariaDB over the unix socket as root (unix_socket authentication).
#
# Output: what was done, one line each; exactly "unchanged" as the last line when nothing had
# to be done. --check reports what would be done ("...: would be ...") and changes nothing.
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

die() { printf 'first-boot.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
usage() { printf 'usage: first-boot.sh --pod NAME [--domain DOMAIN] [--check]\n' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --pod) [ $# -ge 2 ] || usage; pod="$2"; shift 2 ;;
        --pod=*) pod="${1#--pod=}"; shift ;;
        --domain) [ $# -ge 2 ] || usage; domain="$2"; shift 2 ;;
        --domain=*) domain="${1#--domain=}"; shift ;;
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
[ "$(id -u)" -eq 0 ] || die "must run as root (MariaDB's root login is the unix socket)"
command -v mariadb >/dev/null 2>&1 || die "the mariadb client is not installed"

# Names: the pod name with every character MariaDB would need quoting for replaced by '_',
# lower case; databases hold at most 64 characters, user names 80.
base="$(printf '%s' "$pod" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_' '_')"
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
        printf '[client]\nuser=%s\npassword=%s\ndatabase=%s\n' "$DB_USER" "$password" "$DB"
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

exec 9>"$LOCK"
flock -w 60 9 || die "another first-boot.sh is running (lock $LOCK)"

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
    printf 'database %s, user %s: would be created if missing (MariaDB does not answer: not looked at)\n' "$DB" "$DB_USER"
    exit 0
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
elif [ "$file_db" != "$DB" ]; then
    [ "$check" = 1 ] || write_cnf
    did "$CNF" "given the database name"
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

if [ "${#changes[@]}" -eq 0 ]; then
    printf 'unchanged\n'
else
    printf '%s\n' "${changes[@]}"
fi
