"""sigproxy.endpoints: AWS host name -> (signing service, region).

Expected signing names and regions are botocore's: the service model's ``signingName`` and endpoints.json's
``credentialScope``.
"""

from __future__ import annotations

import pytest

from sigproxy.endpoints import Endpoint, parse_host

HOSTS: list[tuple[str, str, str]] = [
    # S3 Express One Zone: zonal and control endpoints both sign as s3express (botocore's S3 endpoint rules).
    ("b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com", "s3express", "us-east-1"),
    ("s3express-control.us-west-2.amazonaws.com", "s3express", "us-west-2"),
    # Regional endpoints.
    ("sqs.eu-west-1.amazonaws.com", "sqs", "eu-west-1"),
    ("logs.ap-southeast-2.amazonaws.com", "logs", "ap-southeast-2"),
    ("monitoring.us-east-1.amazonaws.com", "monitoring", "us-east-1"),
    ("lambda.eu-central-1.amazonaws.com", "lambda", "eu-central-1"),
    ("ssm.il-central-1.amazonaws.com", "ssm", "il-central-1"),
    ("sts.eu-west-1.amazonaws.com", "sts", "eu-west-1"),
    ("SQS.EU-WEST-1.AMAZONAWS.COM", "sqs", "eu-west-1"),
    ("sqs.eu-west-1.amazonaws.com.", "sqs", "eu-west-1"),
    # S3: virtual host, path style, legacy, external-1, bucket names with dots and the label s3.
    ("bucket.s3.amazonaws.com", "s3", "us-east-1"),
    ("s3.amazonaws.com", "s3", "us-east-1"),
    ("bucket.s3.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
    ("s3.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
    ("bucket.s3-eu-west-1.amazonaws.com", "s3", "eu-west-1"),
    ("s3-eu-west-1.amazonaws.com", "s3", "eu-west-1"),
    ("s3-external-1.amazonaws.com", "s3", "us-east-1"),
    ("bucket.s3-external-1.amazonaws.com", "s3", "us-east-1"),
    ("my.s3.bucket.s3.us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("s3.bucket.s3.amazonaws.com", "s3", "us-east-1"),
    ("s3-logs.s3.ap-south-1.amazonaws.com", "s3", "ap-south-1"),
    ("ap-123456789012.s3-accesspoint.us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("123456789012.s3-control.us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("s3-control-fips.ca-central-1.amazonaws.com", "s3", "ca-central-1"),
    ("ap-1-123456789012.op-01234.s3-outposts.us-east-1.amazonaws.com", "s3-outposts", "us-east-1"),
    ("ap-123456789012.s3-object-lambda.eu-west-1.amazonaws.com", "s3-object-lambda", "eu-west-1"),
    # Dualstack.
    ("s3.dualstack.us-west-2.amazonaws.com", "s3", "us-west-2"),
    ("bucket.s3.dualstack.eu-central-1.amazonaws.com", "s3", "eu-central-1"),
    ("ec2.us-east-1.api.aws", "ec2", "us-east-1"),
    ("dynamodb.us-east-1.api.aws", "dynamodb", "us-east-1"),
    ("aos.eu-west-1.api.aws", "es", "eu-west-1"),
    # FIPS.
    ("s3-fips.us-east-2.amazonaws.com", "s3", "us-east-2"),
    ("s3-fips.dualstack.us-east-2.amazonaws.com", "s3", "us-east-2"),
    ("dynamodb-fips.us-west-1.amazonaws.com", "dynamodb", "us-west-1"),
    ("sts-fips.us-east-1.amazonaws.com", "sts", "us-east-1"),
    ("kms-fips.us-west-2.amazonaws.com", "kms", "us-west-2"),
    ("fips.batch.us-east-1.amazonaws.com", "batch", "us-east-1"),
    ("data.iot-fips.ca-central-1.amazonaws.com", "iotdata", "ca-central-1"),
    ("appstream2-fips.us-east-1.amazonaws.com", "appstream", "us-east-1"),
    ("iam-fips.amazonaws.com", "iam", "us-east-1"),
    ("route53-fips.amazonaws.com", "route53", "us-east-1"),
    # Global services and the region they sign in.
    ("iam.amazonaws.com", "iam", "us-east-1"),
    ("sts.amazonaws.com", "sts", "us-east-1"),
    ("route53.amazonaws.com", "route53", "us-east-1"),
    ("cloudfront.amazonaws.com", "cloudfront", "us-east-1"),
    ("organizations.amazonaws.com", "organizations", "us-east-1"),
    ("globalaccelerator.amazonaws.com", "globalaccelerator", "us-west-2"),
    ("savingsplans.amazonaws.com", "savingsplans", "us-east-1"),
    ("global.health.amazonaws.com", "health", "us-east-1"),
    ("iam.global.api.aws", "iam", "us-east-1"),
    # aws-cn.
    ("s3.cn-north-1.amazonaws.com.cn", "s3", "cn-north-1"),
    ("bucket.s3.cn-north-1.amazonaws.com.cn", "s3", "cn-north-1"),
    ("iam.amazonaws.com.cn", "iam", "cn-north-1"),
    ("route53.amazonaws.com.cn", "route53", "cn-northwest-1"),
    ("budgets.amazonaws.com.cn", "budgets", "cn-northwest-1"),
    ("dynamodb.cn-northwest-1.amazonaws.com.cn", "dynamodb", "cn-northwest-1"),
    ("data.ats.iot.cn-north-1.amazonaws.com.cn", "iotdata", "cn-north-1"),
    # aws-us-gov.
    ("iam.us-gov.amazonaws.com", "iam", "us-gov-west-1"),
    ("s3.us-gov-west-1.amazonaws.com", "s3", "us-gov-west-1"),
    ("s3-fips.us-gov-west-1.amazonaws.com", "s3", "us-gov-west-1"),
    ("sts.us-gov-east-1.amazonaws.com", "sts", "us-gov-east-1"),
    # Customer endpoints: API Gateway, OpenSearch, Lambda function URLs.
    ("abc123.execute-api.eu-west-1.amazonaws.com", "execute-api", "eu-west-1"),
    ("search-mydomain-abc.eu-west-1.es.amazonaws.com", "es", "eu-west-1"),
    ("vpc-mydomain-abc.eu-west-1.es.amazonaws.com", "es", "eu-west-1"),
    ("abc.us-east-1.aoss.amazonaws.com", "aoss", "us-east-1"),
    ("abcdef.lambda-url.us-east-2.on.aws", "lambda", "us-east-2"),
    ("abc.appsync-api.us-east-1.amazonaws.com", "appsync", "us-east-1"),
    # Endpoint prefixes whose signing name differs.
    ("aps-workspaces.us-east-1.amazonaws.com", "aps", "us-east-1"),
    ("bedrock-runtime.us-east-1.amazonaws.com", "bedrock", "us-east-1"),
    ("bedrock-agent-runtime.us-east-1.amazonaws.com", "bedrock", "us-east-1"),
    ("runtime.sagemaker.us-west-2.amazonaws.com", "sagemaker", "us-west-2"),
    ("streams.dynamodb.us-east-1.amazonaws.com", "dynamodb", "us-east-1"),
    ("email.us-east-1.amazonaws.com", "ses", "us-east-1"),
    ("data-ats.iot.us-east-1.amazonaws.com", "iotdata", "us-east-1"),
    ("data.jobs.iot.eu-west-1.amazonaws.com", "iot-jobs-data", "eu-west-1"),
    ("api.ecr.eu-west-1.amazonaws.com", "ecr", "eu-west-1"),
    ("api.ecr-public.us-east-1.amazonaws.com", "ecr-public", "us-east-1"),
    ("runtime.lex.us-east-1.amazonaws.com", "lex", "us-east-1"),
    ("runtime-v2-lex.us-east-1.amazonaws.com", "lex", "us-east-1"),
    ("appconfigdata.eu-west-1.amazonaws.com", "appconfig", "eu-west-1"),
    ("metering.marketplace.us-east-1.amazonaws.com", "aws-marketplace", "us-east-1"),
    ("pinpoint.eu-west-1.amazonaws.com", "mobiletargeting", "eu-west-1"),
    ("sms-voice.pinpoint.eu-west-1.amazonaws.com", "sms-voice", "eu-west-1"),
    # Operation host prefixes glued to the endpoint prefix.
    ("sync-states.eu-west-1.amazonaws.com", "states", "eu-west-1"),
    ("stream-logs.eu-west-1.amazonaws.com", "logs", "eu-west-1"),
]

NOT_AWS = [
    "example.com",
    "127.0.0.1",
    "::1",
    "localhost",
    "amazonaws.com",
    "amazonaws.com.evil.com",
    "evil-amazonaws.com",
    "sqs.eu-west-1.amazonaws.com.evil.com",
    "s3.amazonaws.com.evil.com",
    "foo.on.aws",
]


class TestParseHost:
    @pytest.mark.parametrize(("host", "service", "region"), HOSTS)
    def test_known_hosts(self, host: str, service: str, region: str) -> None:
        """Each AWS endpoint shape resolves to botocore's signing name and signing region."""
        endpoint = parse_host(host)
        assert (endpoint.service, endpoint.region) == (service, region)

    def test_table_is_large(self) -> None:
        """The host table covers at least 40 distinct host names."""
        assert len({h for h, _, _ in HOSTS}) >= 40

    @pytest.mark.parametrize("host", NOT_AWS)
    def test_unknown_hosts(self, host: str) -> None:
        """Hosts outside the AWS suffixes (including look-alikes) give neither service nor region."""
        assert parse_host(host) == Endpoint(None, None)

    def test_region_only(self) -> None:
        """A bare region under an AWS suffix yields the region but no service."""
        assert parse_host("eu-west-1.amazonaws.com") == Endpoint(None, "eu-west-1")

    @pytest.mark.parametrize(
        ("host", "in_host"),
        [
            ("bucket.s3.amazonaws.com", True),
            ("my.s3.bucket.s3.us-west-2.amazonaws.com", True),
            ("bucket.s3-eu-west-1.amazonaws.com", True),
            ("s3.eu-west-1.amazonaws.com", False),
            ("s3.dualstack.us-west-2.amazonaws.com", False),
            ("s3-external-1.amazonaws.com", False),
            ("b--use1-az4--x-s3.s3express-use1-az4.us-east-1.amazonaws.com", True),
            ("s3express-control.us-east-1.amazonaws.com", False),
        ],
    )
    def test_s3_bucket_in_host(self, host: str, in_host: bool) -> None:
        """Virtual-host style S3 names are flagged as carrying the bucket; path style ones are not."""
        assert parse_host(host).s3_bucket_in_host is in_host

    def test_again_and_long(self) -> None:
        """A host asked again (its answer is kept) gets the same answer whatever its case; one longer than a host
        name can be is worked out all the same."""
        for _ in range(2):
            assert parse_host("SQS.eu-west-1.amazonaws.com") == Endpoint("sqs", "eu-west-1")
            assert parse_host("sqs.eu-west-1.amazonaws.com") == Endpoint("sqs", "eu-west-1")
            assert parse_host("b" * 300 + ".s3.eu-west-1.amazonaws.com") == Endpoint("s3", "eu-west-1", True)

    def test_s3_unknown_tail_is_not_guessed(self) -> None:
        """Something after the s3 label that is not a region is not guessed at: nothing is resolved."""
        assert parse_host("bucket.s3.notaregion.amazonaws.com") == Endpoint(None, None)
