// Kafka's and Java's answers for the compatibility test (identity/tests/java_compat.rs).
//
// Input: a file with one case per line, "<certificate file>\t<hex of the UTF-8 rules>".
// Output: one line per case, "<hex of X500Principal.getName()>\t<STATUS>\t<hex detail>",
// STATUS being OK (detail: the principal), NOMATCH (no rule applied), INVALID (Kafka
// refused the rules) or ERROR (Kafka threw while mapping). Hex keeps every string
// byte-exact whatever characters it holds.

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.List;
import org.apache.kafka.common.security.ssl.SslPrincipalMapper;

public final class PrincipalOracle {
    public static void main(String[] args) throws Exception {
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        List<String> lines = Files.readAllLines(Paths.get(args[0]), StandardCharsets.UTF_8);
        StringBuilder out = new StringBuilder();
        for (String line : lines) {
            if (line.isEmpty()) {
                continue;
            }
            String[] fields = line.split("\t", -1);
            byte[] der = Files.readAllBytes(Paths.get(fields[0]));
            X509Certificate certificate =
                    (X509Certificate) factory.generateCertificate(new ByteArrayInputStream(der));
            String dn = certificate.getSubjectX500Principal().getName();
            String rules = new String(unhex(fields[1]), StandardCharsets.UTF_8);
            out.append(hex(dn)).append('\t');
            SslPrincipalMapper mapper;
            try {
                mapper = SslPrincipalMapper.fromRules(rules);
            } catch (RuntimeException e) {
                out.append("INVALID\t").append(hex(String.valueOf(e.getMessage()))).append('\n');
                continue;
            }
            String status;
            try {
                status = "OK\t" + hex(mapper.getName(dn));
            } catch (SslPrincipalMapper.NoMatchingRule e) {
                status = "NOMATCH\t";
            } catch (Exception e) {
                status = "ERROR\t" + hex(e.getClass().getSimpleName() + ": " + e.getMessage());
            }
            out.append(status);
            out.append('\n');
        }
        System.out.print(out);
    }

    private static String hex(String text) {
        StringBuilder sb = new StringBuilder();
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
            sb.append(String.format("%02x", b & 0xff));
        }
        return sb.toString();
    }

    private static byte[] unhex(String hex) {
        byte[] out = new byte[hex.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }
}
