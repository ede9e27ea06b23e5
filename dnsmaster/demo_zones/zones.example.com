# zones.example.com - one customer's zone. Save this file and dnsmaster rebuilds and pushes.
.example.com:127.0.0.1:a:259200
@example.com::mail.example.com:10
=mail.example.com:192.0.2.25
+www.example.com:192.0.2.80
+www.example.com:192.0.2.81
Cftp.example.com:www.example.com
'example.com:v=spf1 mx -all
