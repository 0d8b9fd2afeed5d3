# Sourced by the crawl scripts (crawl_side_by_side.sh, crawl_vs_wrk.sh).
#
# start_nginx_pages DIR PORT: nginx with one worker and the echo module,
# its files in DIR, listening on 127.0.0.1:PORT (backlog 4096, keep-alive
# without a request limit), serving every /page/... as the same small HTML
# page after 100 ms (`echo_sleep 0.1`).
echo_module=/usr/lib/nginx/modules/ngx_http_echo_module.so
start_nginx_pages() {
  local dir=$1 port=$2 body
  body=$(python3 -c 'print("<html><head><title>page</title></head><body>" + "<p>lorem ipsum</p>" * 100 + "</body></html>")')
  cat >"$dir/nginx.conf" <<CONF
load_module $echo_module;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location /page/ { default_type text/html; echo_sleep 0.1; echo '$body'; }
  }
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf"
}
